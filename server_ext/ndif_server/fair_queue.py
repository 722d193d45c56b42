"""FairQueue: the jobs waiting for one model, taken in turn across users, and across each user's notebooks."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass
class _Clients(Generic[Item]):
    """One user's waiting items by client, and when each client last had its turn (0: never)."""

    waiting: OrderedDict[Hashable, deque[Item]] = field(default_factory=OrderedDict)
    last_turn: dict[Hashable, int] = field(default_factory=dict)

    def copy(self) -> _Clients[Item]:
        waiting = OrderedDict((key, deque(items)) for key, items in self.waiting.items())
        return _Clients(waiting, dict(self.last_turn))


class FairQueue(Generic[Item]):
    """Items put with a user and a client (a notebook's kernel); `take` gives the next in fair order.

    The next user is the one whose last turn is the oldest (a user who never had one goes first), so one user's many
    jobs never hold another's single job behind them; within a user, the same rule picks among their clients, and a
    client's own items keep their order. Users' last turns are kept (one number per user of the server).
    Thread-safe: `take` blocks on a condition for worker threads, `take_nowait` serves event loops.
    """

    def __init__(self) -> None:
        self._waiting: OrderedDict[Hashable, _Clients[Item]] = OrderedDict()  # users with items, in order of arrival
        self._last_turn: dict[Hashable, int] = {}
        self._turns_given = 0
        self._changed = threading.Condition()
        self._closed = False

    def put(self, item: Item, user: Hashable, client: Hashable = "") -> None:
        with self._changed:
            clients = self._waiting.setdefault(user, _Clients())
            clients.waiting.setdefault(client, deque()).append(item)
            self._changed.notify()

    def take(self, timeout: float | None = None) -> Item | None:
        """The next item, waiting up to `timeout` seconds for one (None: for ever); None when none came or closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or bool(self._waiting), timeout)
            return None if self._closed else self._take()

    def take_nowait(self) -> Item | None:
        with self._changed:
            return self._take()

    def take_also(self, accept: Callable[[Item], bool], most: int) -> list[Item]:
        """Up to `most` more waiting items that `accept` takes, in the order `take` would give them, each counted as
        its user's and client's turn; the items passed over keep their places."""
        taken: list[Item] = []
        with self._changed:
            while len(taken) < most and self._waiting:
                item = self._first_accepted(accept)
                if item is None:
                    break
                self._turns_given += 1
                user, client = self._place_of(item)
                self._waiting[user].waiting[client].remove(item)
                self._last_turn[user] = self._turns_given
                self._waiting[user].last_turn[client] = self._turns_given
                _drop_if_empty(self._waiting, user, client)
                taken.append(item)
        return taken

    def _first_accepted(self, accept: Callable[[Item], bool]) -> Item | None:
        waiting = OrderedDict((user, clients.copy()) for user, clients in self._waiting.items())
        last_turn = dict(self._last_turn)
        for index in range(self._count()):
            item = _take_from(waiting, last_turn, self._turns_given + 1 + index)
            if accept(item):
                return item
        return None

    def _place_of(self, item: Item) -> tuple[Hashable, Hashable]:
        for user, clients in self._waiting.items():
            for client, items in clients.waiting.items():
                if item in items:
                    return user, client
        raise KeyError(item)

    def remove(self, item: Item) -> bool:
        """Take `item` out of the line (a cancelled job); False when it is not waiting."""
        with self._changed:
            for user, clients in self._waiting.items():
                for client, items in clients.waiting.items():
                    if item in items:
                        items.remove(item)
                        _drop_if_empty(self._waiting, user, client)
                        return True
        return False

    def order(self) -> list[Item]:
        """Every waiting item in the order `take` would give them now."""
        with self._changed:
            waiting = OrderedDict((user, clients.copy()) for user, clients in self._waiting.items())
            last_turn = dict(self._last_turn)
            return [_take_from(waiting, last_turn, self._turns_given + 1 + index) for index in range(self._count())]

    def close(self) -> None:
        """Wake every waiting `take` with None, now and later."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._changed:
            return self._count()

    def _count(self) -> int:
        return sum(len(items) for clients in self._waiting.values() for items in clients.waiting.values())

    def _take(self) -> Item | None:
        if not self._waiting:
            return None
        self._turns_given += 1
        return _take_from(self._waiting, self._last_turn, self._turns_given)


def _oldest_turn(keys: Iterable[Hashable], last_turn: dict[Hashable, int]) -> Hashable:
    """The key whose last turn is the oldest; among equals, the one waiting longest."""
    return min(keys, key=lambda key: last_turn.get(key, 0))


def _take_from(waiting: OrderedDict[Hashable, _Clients[Item]], last_turn: dict[Hashable, int], turn: int) -> Item:
    """The next item, marking `turn` as its user's and client's last."""
    user = _oldest_turn(waiting, last_turn)
    clients = waiting[user]
    client = _oldest_turn(clients.waiting, clients.last_turn)
    item = clients.waiting[client].popleft()
    last_turn[user] = turn
    clients.last_turn[client] = turn
    _drop_if_empty(waiting, user, client)
    return item


def _drop_if_empty(waiting: OrderedDict[Hashable, _Clients[Item]], user: Hashable, client: Hashable) -> None:
    """Forget a client with nothing waiting (a notebook's next job starts afresh among its user's), and take a user
    with no client waiting out of the line (their last turn is kept: sending jobs one at a time does not jump it)."""
    clients = waiting[user]
    if not clients.waiting[client]:
        del clients.waiting[client]
        clients.last_turn.pop(client, None)
    if not clients.waiting:
        del waiting[user]
