"""The collector's read model: the JSON shapes of its pages and the figures drawn from them.

Built from the store's read API (`source.FleetSource`); the web app, the terminal view, the report
and the prediction page render them. It never imports the web app: `collector.web` depends on it.
"""
