"""FairQueue: the jobs waiting for one model, taken in turn across users, and across each user's notebooks."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass
class _Turns(Generic[Item]):
    """Waiting items grouped by a key, and when each key last had its turn (0: never)."""

    waiting: OrderedDict[Hashable, deque[Item]] = field(default_factory=OrderedDict)
    last_turn: dict[Hashable, int] = field(default_factory=dict)

    def next_key(self) -> Hashable:
        """The waiting key whose last turn is the oldest; among equals, the one waiting longest."""
        return min(self.waiting, key=lambda key: self.last_turn.get(key, 0))

    def copy(self) -> _Turns[Item]:
        waiting = OrderedDict((key, deque(items)) for key, items in self.waiting.items())
        return _Turns(waiting, dict(self.last_turn))


class FairQueue(Generic[Item]):
    """Items put with a user and a client (a notebook's kernel); `take` gives the next in fair order.

    The next user is the one whose last turn is the oldest (a user who never had one goes first), so one user's many
    jobs never hold another's single job behind them; within a user, the same rule picks among their clients, and a
    client's own items keep their order. Users' last turns are kept (one number per user of the server).
    Thread-safe: `take` blocks on a condition for worker threads, `take_nowait` serves event loops.
    """

    def __init__(self) -> None:
        self._users: _Turns = _Turns()
        self._clients: dict[Hashable, _Turns[Item]] = {}
        self._turns_given = 0
        self._changed = threading.Condition()
        self._closed = False

    def put(self, item: Item, user: Hashable, client: Hashable = "") -> None:
        with self._changed:
            clients = self._clients.setdefault(user, _Turns())
            clients.waiting.setdefault(client, deque()).append(item)
            self._users.waiting.setdefault(user, deque())
            self._changed.notify()

    def take(self, timeout: float | None = None) -> Item | None:
        """The next item, waiting up to `timeout` seconds for one (None: for ever); None when none came or closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or bool(self._users.waiting), timeout)
            return None if self._closed else self._take()

    def take_nowait(self) -> Item | None:
        with self._changed:
            return self._take()

    def remove(self, item: Item) -> bool:
        """Take `item` out of the line (a cancelled job); False when it is not waiting."""
        with self._changed:
            for user, clients in self._clients.items():
                for client, items in clients.waiting.items():
                    if item in items:
                        items.remove(item)
                        _drop_if_empty(clients, client, self._users, user)
                        if user not in self._users.waiting:
                            del self._clients[user]
                        return True
        return False

    def order(self) -> list[Item]:
        """Every waiting item in the order `take` would give them now."""
        with self._changed:
            users = self._users.copy()
            clients = {user: turns.copy() for user, turns in self._clients.items()}
            return [_take_from(users, clients, self._turns_given + 1 + index)[0] for index in range(self._count())]

    def close(self) -> None:
        """Wake every waiting `take` with None, now and later."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._changed:
            return self._count()

    def _count(self) -> int:
        return sum(len(items) for turns in self._clients.values() for items in turns.waiting.values())

    def _take(self) -> Item | None:
        if not self._users.waiting:
            return None
        self._turns_given += 1
        item: Item
        item, user = _take_from(self._users, self._clients, self._turns_given)
        if user not in self._users.waiting:
            del self._clients[user]
        return item


def _take_from(users: _Turns, clients: dict[Hashable, _Turns], turn: int) -> tuple[Item, Hashable]:
    """The next item, marking `turn` as its user's and client's last; with the user it came from."""
    user = users.next_key()
    user_clients = clients[user]
    client = user_clients.next_key()
    item = user_clients.waiting[client].popleft()
    users.last_turn[user] = turn
    user_clients.last_turn[client] = turn
    _drop_if_empty(user_clients, client, users, user)
    return item, user


def _drop_if_empty(clients: _Turns, client: Hashable, users: _Turns, user: Hashable) -> None:
    """Forget a client with nothing waiting (a notebook's next job starts afresh among its user's), and take a user
    with no client waiting out of the line (their last turn is kept: sending jobs one at a time does not jump it)."""
    if not clients.waiting[client]:
        del clients.waiting[client]
        clients.last_turn.pop(client, None)
    if not clients.waiting:
        users.waiting.pop(user, None)
