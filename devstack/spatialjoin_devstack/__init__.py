"""spatialjoin_devstack."""
