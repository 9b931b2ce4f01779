"""The one exception hierarchy of ctxopt.

Every error a user can act on derives from :class:`CtxoptError`; the CLI prints
its message as one line and exits with status 2, with no traceback::

    CtxoptError
    ├── ConfigError          bad config, stream YAML, CLI argument or LM spec
    ├── DataError            a data file is missing, empty or lacks a field
    ├── LMError              an LM cannot be built or loaded
    │   ├── MissingDependencyError   llama_cpp or a model package is not installed
    │   ├── ModelIntegrityError      a model file has the wrong sha256
    │   └── EndpointError            an LM endpoint fails persistently (auth, unknown model, down)
    ├── StoreError           a store operation failed (not a store, bad ref, …)
    │   └── StoreLockedError another writer holds the store lock
    ├── EditError            an edit is invalid (missing item id, no-op, …)
    ├── ProgramError         every example of an evaluation failed the same way (broken program or LM)
    └── BudgetExceeded       a hard budget would be exceeded
"""

from __future__ import annotations


class CtxoptError(Exception):
    """Base class of every error ctxopt raises on purpose."""


class ConfigError(CtxoptError):
    """A config file, stream file, LM spec or CLI argument is invalid."""


class DataError(CtxoptError):
    """A data file is missing, empty, or lacks a required field."""


class LMError(CtxoptError):
    """A language model cannot be built, loaded or called."""


class MissingDependencyError(LMError):
    """An optional dependency (llama_cpp, a model package) is not installed."""


class ModelIntegrityError(LMError):
    """A model file does not have the expected sha256; it is never loaded."""


class EndpointError(LMError):
    """An LM endpoint fails persistently: bad or missing credentials, an unknown model, or a host that stays down.

    The run stops with one line naming the LM spec, the error class and a hint; its state is
    saved, so the same command resumes once the endpoint works (:mod:`ctxopt.endpoint`).
    """


class StoreError(CtxoptError):
    """A store operation failed."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock."""


class ProgramError(CtxoptError):
    """Every example of an evaluation failed with the same exception: the program or its LM is broken."""


class EditError(CtxoptError):
    """An edit cannot be applied; the context is left unchanged."""


class BudgetExceeded(CtxoptError):
    """A call or token budget would be exceeded."""


__all__ = [
    "CtxoptError",
    "ConfigError",
    "DataError",
    "LMError",
    "MissingDependencyError",
    "ModelIntegrityError",
    "EndpointError",
    "StoreError",
    "StoreLockedError",
    "EditError",
    "BudgetExceeded",
    "ProgramError",
]
