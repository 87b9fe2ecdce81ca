"""spatialjoin_worker."""
