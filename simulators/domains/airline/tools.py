"""Tools of this domain (being written)."""

from apigen_mt.simulators.toolkit import PythonCallArguments, Toolkit


class AirlineTools(PythonCallArguments, Toolkit):
    pass
