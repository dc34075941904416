"""Tools of this domain (being written)."""

from apigen_mt.simulators.toolkit import PythonCallArguments, Toolkit


class RetailTools(PythonCallArguments, Toolkit):
    pass
