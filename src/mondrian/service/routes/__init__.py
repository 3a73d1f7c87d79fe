"""The HTTP routes, one module per resource; service/app.py includes each `router`."""
