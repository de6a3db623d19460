"""Route tables of the API, one module per resource."""
