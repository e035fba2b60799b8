"""``FewShotRegressor``: learn a user's function from a few ``(x, y)`` samples; scikit-learn style.

The regressor keeps, per **group** of samples (``fit(X, y, groups=g)``; a group is one source: a
sensor, a session, a person), the sufficient statistics of its samples: ``sum phi^T phi [P, P]`` and
``sum phi^T y [P, O]`` of the bundle's features ``phi`` (float64). Both rules (``alpaca``,
``metasgd``) are functions of these sums alone, so

- ``partial_fit`` adds to the sums: it equals ``fit`` on all samples so far (up to float64 rounding
  of the sum order);
- ``forget(group)`` drops that group's sums and re-adapts from the others: it equals ``fit`` on the
  samples of the remaining groups (the same rounding);
- the state holds no sample, feature vector or target, and its size is ``G (P^2 + P O)`` numbers
  whatever the number of samples (a group of one sample still determines that sample's features
  and target: see docs/regression.md).

``predict(X)`` returns ``[N]`` for a one-output bundle (``[N, O]`` otherwise); ``return_std=True``
also returns the predictive standard deviation where the rule gives one (``alpaca``: Bayesian
posterior; ``metasgd``: none, an :class:`InputError` says so).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from edgemeta.contract.vector_input import check_vectors
from edgemeta.errors import InputError, NotFittedError
from edgemeta.runtime.regression_bundle import RegressionBundle
from edgemeta.runtime.regression_state import (
    RegressionState,
    read_regression_state,
    write_regression_state,
)

DEFAULT_GROUP = "default"
TARGET_MAX = 1e150                 # |y| beyond this overflows the float64 sums of squares


def check_targets(y: Any, n: int, outputs: int) -> np.ndarray:
    """Targets as float64 ``[n, outputs]``: ``[n]`` is accepted for one output; finite real numbers."""
    if y is None or isinstance(y, (str, bytes, dict, set)) or np.isscalar(y):
        raise InputError(f"targets are {type(y).__name__}; expected {n} numbers (an array [N] or [N, {outputs}])")
    try:
        t = np.asarray(y)
    except (ValueError, TypeError):
        raise InputError("targets are a ragged nested sequence; expected an array [N] or [N, O]") from None
    if t.dtype.kind not in "iuf":
        raise InputError(f"targets have dtype {t.dtype}; expected real numbers (int or float)")
    if t.ndim == 1 and outputs == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape != (n, outputs):
        raise InputError(f"targets have shape {list(t.shape)}; expected [{n}] or [{n}, {outputs}]: one row of "
                         f"{outputs} number(s) per sample")
    t = t.astype(np.float64)
    bad = ~np.isfinite(t) | (np.abs(t) > TARGET_MAX)
    if bad.any():
        row = int(np.argwhere(bad.any(1))[0, 0])
        raise InputError(f"targets row {row} holds NaN, infinity or a magnitude over {TARGET_MAX:g}; expected "
                         f"finite numbers")
    return t


def check_groups(groups: Any, n: int) -> list[Any]:
    """One group name per sample: all ``str`` or all ``int`` (None: every sample in ``"default"``)."""
    if groups is None:
        return [DEFAULT_GROUP] * n
    if isinstance(groups, (str, int)) and not isinstance(groups, bool):
        return [groups] * n
    items = list(groups) if isinstance(groups, (list, tuple, np.ndarray)) else None
    if items is None or len(items) != n:
        raise InputError(f"groups must be one name (str or int) or one per sample ({n}), got "
                         f"{type(groups).__name__}{'' if items is None else f' of {len(items)}'}")
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (str, int, np.integer)):
            raise InputError(f"group {v!r} is {type(v).__name__}; expected str or int group names")
        out.append(int(v) if isinstance(v, (int, np.integer)) else str(v))
    if len({type(v) for v in out}) > 1:
        raise InputError("groups mix str and int; expected one kind of group name")
    return out


class FewShotRegressor:
    """Adapt a regression bundle's head to a user's ``(x, y)`` samples, then predict.

    - ``fit(X, y, groups=None)``: learn from these samples only; ``partial_fit``: add samples.
    - ``forget(group)``: remove every sample of that group, exactly.
    - ``predict(X, return_std=False)``; ``score(X, y)``: R^2 as scikit-learn's regressors.
    - ``save(path, key=None)`` / ``FewShotRegressor.load(bundle, path, key=None)``.

    ``X``: ``[N, D]`` real numbers (``D`` = the bundle's ``vector_input.dim``); ``y``: ``[N]`` or ``[N, O]``.
    Calls are serialised by one lock, so predicting from several threads while another adds samples
    is safe.
    """

    _estimator_type = "regressor"

    def __init__(self, bundle: RegressionBundle | str | os.PathLike, threads: int = 1):
        self.bundle = bundle if isinstance(bundle, RegressionBundle) else RegressionBundle.load(bundle, threads)
        self.threads = threads
        self._lock = threading.RLock()
        self._clear()

    def _clear(self) -> None:
        P, O = self.bundle.embedding_dim, self.bundle.outputs
        self._stats: dict[Any, tuple[np.ndarray, np.ndarray, int]] = {}
        self._head: dict[str, np.ndarray] | None = None
        self._shape = (P, O)

    # ------------------------------------------------------------------ scikit-learn protocol
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments (``bundle`` as the loaded :class:`RegressionBundle`)."""
        return {"bundle": self.bundle, "threads": self.threads}

    def set_params(self, **params: Any) -> "FewShotRegressor":
        """Change constructor arguments; a new bundle (or ``threads``, which reloads it) drops every held group."""
        unknown = sorted(set(params) - {"bundle", "threads"})
        if unknown:
            raise InputError(f"unknown parameter(s) {unknown}; expected some of ['bundle', 'threads']")
        threads = params.get("threads", self.threads)
        if "bundle" in params or threads != self.threads:
            b = params.get("bundle", self.bundle.source)
            bundle = b if isinstance(b, RegressionBundle) else RegressionBundle.load(b, threads)
            with self._lock:
                self.bundle, self.threads = bundle, threads
                self._clear()
        return self

    def __sklearn_clone__(self) -> "FewShotRegressor":
        """An unfitted regressor with the same parameters, sharing the loaded bundle."""
        return type(self)(**self.get_params())

    def __sklearn_is_fitted__(self) -> bool:
        return self._head is not None

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags  # only scikit-learn calls this

        return Tags(estimator_type="regressor", target_tags=TargetTags(required=True),
                    regressor_tags=RegressorTags(), input_tags=InputTags(two_d_array=True), non_deterministic=False)

    def __repr__(self) -> str:
        return f"FewShotRegressor({self.bundle.source!r}, method={self.bundle.method!r}, groups={len(self._stats)})"

    # ------------------------------------------------------------------ learning
    def fit(self, X: Any, y: Any, groups: Any = None) -> FewShotRegressor:
        """Learn from these samples, replacing everything learned before."""
        update = self._statistics(X, y, groups)
        with self._lock:
            self._clear()
            self._merge(update)
        return self

    def partial_fit(self, X: Any, y: Any, groups: Any = None) -> FewShotRegressor:
        """Add samples (to their groups); equals ``fit`` on every sample so far."""
        update = self._statistics(X, y, groups)
        with self._lock:
            self._merge(update)
        return self

    def forget(self, group: Any) -> FewShotRegressor:
        """Drop every sample of ``group``; equals ``fit`` on the other groups' samples."""
        with self._lock:
            if group not in self._stats or isinstance(group, bool):
                raise InputError(f"group {group!r} is not held; the held groups are {self.groups_}")
            del self._stats[group]
            self._readapt()
        return self

    def _statistics(self, X: Any, y: Any, groups: Any) -> dict[Any, tuple[np.ndarray, np.ndarray, int]]:
        """Each group's float64 sums ``(phi^T phi, phi^T y, count)`` of these samples (checked first)."""
        x = check_vectors(X, self.bundle.input_dim, "X")
        t = check_targets(y, len(x), self.bundle.outputs)
        g = check_groups(groups, len(x))
        phi = self.bundle.embed(x).astype(np.float64)
        if not np.isfinite(phi).all():
            raise InputError("X gives non-finite features in this bundle (values far outside what it was "
                             "trained on); expected inputs of the training data's scale")
        names = np.array(g, dtype=object)
        out = {}
        for name in dict.fromkeys(g):
            rows = names == name
            f = phi[rows]
            out[name] = (f.T @ f, f.T @ t[rows], int(rows.sum()))
        return out

    def _merge(self, update: dict[Any, tuple[np.ndarray, np.ndarray, int]]) -> None:
        held = {type(k) for k in self._stats} | {type(k) for k in update}
        if len(held) > 1:
            raise InputError(f"groups mix str and int (held: {self.groups_}); expected one kind of group name")
        new = dict(self._stats)
        for name, (g, t, n) in update.items():
            if name in new:
                g0, t0, n0 = new[name]
                g, t, n = g0 + g, t0 + t, n0 + n
            new[name] = (g, t, n)
        head = self._adapt(new)
        self._stats, self._head = new, head

    def _adapt(self, stats: dict[Any, tuple[np.ndarray, np.ndarray, int]]) -> dict[str, np.ndarray] | None:
        if not stats:
            return None
        P, O = self._shape
        gram, targets = np.zeros((P, P)), np.zeros((P, O))
        for name in sorted(stats, key=lambda k: (str(type(k)), k)):       # one summation order whatever the history
            gram += stats[name][0]
            targets += stats[name][1]
        head = self.bundle.adapt(gram, targets)
        if not all(np.isfinite(v).all() for v in head.values()):
            raise InputError("the samples give a non-finite head in this bundle (values far outside the training "
                             "data's scale); nothing was added")
        return head

    def _readapt(self) -> None:
        self._head = self._adapt(self._stats)

    # ------------------------------------------------------------------ predicting
    @property
    def groups_(self) -> list[Any]:
        """The held group names, sorted."""
        return sorted(self._stats, key=lambda k: (str(type(k)), k))

    @property
    def n_samples_(self) -> int:
        return sum(n for _, _, n in self._stats.values())

    @property
    def params_(self) -> dict[str, np.ndarray] | None:
        """The adapted head parameters (float32), or None before ``fit``."""
        return None if self._head is None else {k: v.copy() for k, v in self._head.items()}

    def predict(self, X: Any, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predictions ``[N]`` (one output) or ``[N, O]``; with ``return_std`` also the predictive std."""
        if return_std and not self.bundle.gives_variance:
            raise InputError(f"a {self.bundle.method!r} bundle gives no uncertainty (regression.uncertainty is "
                             f"'none'); call predict(X) without return_std, or use an alpaca bundle")
        x = check_vectors(X, self.bundle.input_dim, "X", allow_empty=True)
        with self._lock:
            head = self._head
        if head is None:
            raise NotFittedError("this FewShotRegressor holds no samples; call fit(X, y) first")
        pred, var = self.bundle.predict(self.bundle.embed(x), head)
        squeeze = (lambda a: a[:, 0]) if self.bundle.outputs == 1 else (lambda a: a)
        if return_std:
            return squeeze(pred), squeeze(np.sqrt(var))
        return squeeze(pred)

    def score(self, X: Any, y: Any) -> float:
        """Coefficient of determination R^2 of ``predict(X)`` against ``y`` (mean over outputs)."""
        pred = self.predict(X)
        t = check_targets(y, len(pred), self.bundle.outputs)
        p = np.asarray(pred, np.float64).reshape(t.shape)
        ss_res = ((t - p) ** 2).sum(0)
        ss_tot = ((t - t.mean(0)) ** 2).sum(0)
        return float(np.mean(1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0)))

    # ------------------------------------------------------------------ state
    def save(self, path: str | os.PathLike, key: bytes | None = None) -> None:
        """Write the per-group sums and the head atomically (encrypted with ``key``, 32 bytes, if given)."""
        with self._lock:
            names = self.groups_
            P, O = self._shape
            gram = np.stack([self._stats[n][0] for n in names]) if names else np.zeros((0, P, P))
            targets = np.stack([self._stats[n][1] for n in names]) if names else np.zeros((0, P, O))
            samples = np.array([self._stats[n][2] for n in names], np.int64)
            state = RegressionState(self.bundle.identity, self.bundle.method, names, gram, targets, samples,
                                    dict(self._head or {}))
        write_regression_state(path, state, key)

    @classmethod
    def load(cls, bundle: RegressionBundle | str | os.PathLike, path: str | os.PathLike, key: bytes | None = None,
             threads: int = 1) -> FewShotRegressor:
        """A regressor for ``bundle`` holding the state saved at ``path``."""
        reg = cls(bundle, threads)
        P, O = reg._shape
        st = read_regression_state(path, P, O, reg.bundle.identity, key)
        stats = {name: (st.gram[i], st.targets[i], int(st.samples[i])) for i, name in enumerate(st.groups)}
        with reg._lock:
            reg._stats, reg._head = stats, reg._adapt(stats)
        return reg

    @classmethod
    def load_or_new(cls, bundle: RegressionBundle | str | os.PathLike, path: str | os.PathLike,
                    key: bytes | None = None, threads: int = 1) -> FewShotRegressor:
        """``load`` when ``path`` exists, else an empty regressor."""
        if os.path.lexists(path):
            return cls.load(bundle, path, key, threads)
        return cls(bundle, threads)
