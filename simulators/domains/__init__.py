"""Built-in domains; importing this package registers them."""

from apigen_mt.simulators.domains import airline, retail, telecom  # noqa: F401
