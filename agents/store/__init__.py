"""The durable store: schema, reducers (the only write path), queries."""

from agents.store.queries import EventFilter
from agents.store.store import AsyncStore, Store
from agents.store.tx import Tx

__all__ = ["AsyncStore", "EventFilter", "Store", "Tx"]
