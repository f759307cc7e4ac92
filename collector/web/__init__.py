"""The collector's web dashboard: fleet, device and compare pages, their JSON twins, and live events.

`create_app(store, hub)` builds the FastAPI app; pages are HTML shells that render their JSON twin
with plotly.js served from the plotly package (the dashboard works offline).
"""
