"""spatialjoin_cli."""
