"""The built-in domains; `apigen_mt.simulators.domain` registers them by name."""

from apigen_mt.simulators.domains import airline, retail, telecom

BUILT_IN = (airline.DOMAIN, retail.DOMAIN, telecom.DOMAIN)
