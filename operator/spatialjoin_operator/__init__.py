"""spatialjoin_operator."""
