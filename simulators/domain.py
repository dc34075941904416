"""The domain registry: a domain by its name (the built-in ones and those registered) or by its module path.

Domains are defined with the types of `apigen_mt.simulators.domain_types`; this module re-exports them, as most
code knows them from here. The built-in domains are registered below, so that they are known before any lookup.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any

from apigen_mt.simulators.domain_types import ApiEdge, DataError, Domain, PolicyRule, PolicyViolation
from apigen_mt.simulators.domains import BUILT_IN

__all__ = ["ApiEdge", "DataError", "Domain", "PolicyRule", "PolicyViolation", "domains", "get_domain", "register"]

_REGISTRY: dict[str, Domain] = {}


def register(domain: Domain) -> Domain:
    """Make `domain` known to `get_domain` by its name. A name already taken by another domain is refused."""
    taken = _REGISTRY.get(domain.name)
    if taken is not None and taken is not domain:
        raise ValueError(
            f"domain name {domain.name!r} is already registered (tools {_where(taken)}); "
            f"give the domain with tools {_where(domain)} another name"
        )
    _REGISTRY[domain.name] = domain
    return domain


def _where(domain: Domain) -> str:
    return f"{domain.toolkit.__module__}.{domain.toolkit.__qualname__}"


for _built_in in BUILT_IN:
    register(_built_in)


def domains() -> dict[str, Domain]:
    return dict(_REGISTRY)


def get_domain(name: str) -> Domain:
    """A registered domain, or the domain an importable module defines (`my_pkg.my_domain`).

    A module's domain is its module-level `DOMAIN`, or its only module-level `Domain`; it is registered under
    its own name if the module did not register it, so later lookups by that name find it too. Raises KeyError
    with a one-line message when neither a domain nor a module of that name exists, or the module has no domain.
    """
    known = domains()
    if name in known:
        return known[name]
    module = _domain_module(name, sorted(known))
    domain = _domain_of(module, name)
    if _REGISTRY.get(domain.name) is not domain:
        try:
            register(domain)
        except ValueError as exc:
            raise KeyError(f"module {name!r}: {exc}") from None
    return domain


def _domain_module(name: str, known: list[str]) -> Any:
    unknown = f"unknown domain {name!r}; known domains: {', '.join(known)}"
    if not all(part.isidentifier() for part in name.split(".")):
        raise KeyError(unknown)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise KeyError(f"{unknown}; nor is it an importable module (no module named {exc.name!r})") from None
        raise KeyError(f"domain module {name!r} cannot be imported: {exc}") from None
    except Exception as exc:  # the module's own code failed: say what and where, in one line
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        problem = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise KeyError(
            f"domain module {name!r} cannot be imported: {problem} ({frame.filename}:{frame.lineno})"
        ) from None


def _domain_of(module: Any, name: str) -> Domain:
    declared = getattr(module, "DOMAIN", None)
    if isinstance(declared, Domain):
        return declared
    if declared is not None:
        raise KeyError(f"module {name!r}: DOMAIN is a {type(declared).__name__}, not a Domain")
    found = {attr: value for attr, value in vars(module).items() if isinstance(value, Domain)}
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        where = getattr(module, "__file__", None) or "a namespace package"
        raise KeyError(f"module {name!r} ({where}) defines no domain; give it a module-level DOMAIN = Domain(...)")
    raise KeyError(f"module {name!r} defines several domains ({', '.join(sorted(found))}); name the one to load DOMAIN")
