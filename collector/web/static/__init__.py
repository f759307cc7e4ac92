"""Static assets of the dashboard: its script and stylesheet (package data); plotly.js comes from plotly."""
