"""A whole simulated cluster behind the scheduler interface, for laptops and demos."""
