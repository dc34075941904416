"""The authentication and one-user rules of domains whose agent authenticates the user with a tool.

A domain states its tools and wording once in an `Authentication`; its `authenticate_first` and `one_user`
methods are the rules' checks. A blueprint's ground truth may leave the authentication out, and its `user_id`
stands for the user the agent will have authenticated (see `apigen_mt.simulators.trace`); an episode is judged
on the first authentication call that returned a user of the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from apigen_mt.simulators.trace import ActionTrace, lookup


@dataclass(frozen=True)
class Authentication:
    """How a domain authenticates its user, and how its rules word a violation.

    The messages are `str.format` templates: `too_early` gets `call` (the call's label), `unknown_user` gets
    `user`, and `foreign_record` gets `call`, `kind` (the id argument without `_id`), `record_id`, `owner` and
    `user`.
    """

    tools: frozenset[str]  # calls whose observation is the user id they authenticated
    exempt: frozenset[str]  # calls allowed before authentication
    records: tuple[tuple[str, str], ...]  # (table, id argument) of records that must belong to the user
    too_early: str
    no_user: str
    unknown_user: str
    foreign_record: str

    def authenticated(self, trace: ActionTrace) -> tuple[str, int] | None:
        """The user id the first successful authentication call returned, and that call's index."""
        for call in trace.calls:
            if (
                call.name in self.tools
                and not call.failed
                and lookup(call.before.get("users"), call.observation) is not None
            ):
                return call.observation, call.index
        return None

    def conversation_user(self, trace: ActionTrace) -> str | None:
        if not trace.episode and trace.user_id is not None:
            return trace.user_id
        found = self.authenticated(trace)
        return None if found is None else found[0]

    def authenticate_first(self, trace: ActionTrace) -> list[str]:
        if trace.episode:
            found = self.authenticated(trace)
            for call in trace.calls:
                if call.name not in self.exempt and (found is None or call.index < found[1]):
                    return [self.too_early.format(call=call.label())]
            return []
        user = self.conversation_user(trace)
        if user is None:
            return [self.no_user]
        if lookup(trace.initial.get("users"), user) is None:
            return [self.unknown_user.format(user=user)]
        return []

    def one_user(self, trace: ActionTrace) -> list[str]:
        user = self.conversation_user(trace)
        if user is None:
            return []  # authenticate_first reports that nobody is authenticated
        problems = []
        for call in trace.calls:
            named = call.arguments.get("user_id")
            # An id that names no user (a typo the tool refuses) reaches nobody's data.
            if named is not None and named != user and lookup(call.before.get("users"), named) is not None:
                problems.append(f"{call.label()} uses user_id {named!r}, but the conversation is with {user!r}")
            for table, argument in self.records:
                record = lookup(call.before.get(table), call.arguments.get(argument))
                if record is not None and record.get("user_id") != user:
                    problems.append(
                        self.foreign_record.format(
                            call=call.label(),
                            kind=argument.removesuffix("_id"),
                            record_id=call.arguments[argument],
                            owner=record.get("user_id"),
                            user=user,
                        )
                    )
        return problems
