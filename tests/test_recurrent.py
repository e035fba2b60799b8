"""The recurrent rule (GRU class memory, alone or beside the exact class mean): torch == ONNX == a
float64 numpy oracle, the class-mean layout starting as Prototypical Networks, online learning
(partial_fit in parts equals fit in that order, constant work per sample), exact forget, the memory
state file (and hostile variants of it), the manifest section rules, old run records, and colour
bundles. The runtime tests run on a bundle of each memory layout."""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgemeta.contract.bundle import write_bundle
from edgemeta.contract.manifest import build_manifest
from edgemeta.contract.manifest_schema import validate_manifest, writer_version
from edgemeta.errors import BundleError, InputError, StateError
from edgemeta.runtime import Bundle, FewShotClassifier
from edgemeta.runtime.recurrent_memory import OnlineClassifier
from edgemeta.runtime.state import StateData, decode_state, encode_state
from edgemeta.train.export import OPSET, graphs_from_model
from edgemeta.train.methods.recurrent import Recurrent
from edgemeta.train.model import FewShotModel
from edgemeta.train.recurrent_export import UpdateGraph, recurrent_extras, update_graph

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-imagenet" / "sample" / "test"


def untrained_recurrent_bundle(out: Path, seed: int = 3, hidden: int = 32, image_size=(28, 28),
                               channels: int = 1, memory: str = "class_mean") -> Path:
    """A seeded, untrained conv4 + recurrent model exported as a real bundle (format version 3); its
    rule's parameters are nudged off their initial values so every weight matters."""
    torch.manual_seed(seed)
    model = FewShotModel("conv4", "recurrent", image_size=image_size, in_channels=channels,
                         method_kwargs={"hidden": hidden, "memory": memory}).eval()
    with torch.no_grad():
        for p in model.method.parameters():
            p.add_(0.1 * torch.randn_like(p))
    graphs = graphs_from_model(model, (channels, *image_size))
    extra, sections = recurrent_extras(model.method)
    manifest = build_manifest(method="recurrent", image_size=image_size, embedding_dim=model.embedding_dim,
                              head_outputs=model.method.param_names, head_hparams=model.method.hparams(),
                              provenance={"dataset": None, "backbone": "conv4", "seed": seed, "trained": False},
                              parity={}, onnx_opset=OPSET, torch_version=torch.__version__, channels=channels)
    manifest.update(sections)
    return write_bundle(out, manifest, {**graphs, **extra})


@pytest.fixture(scope="module", params=["class_mean", "gru"])
def rec_dir(tmp_path_factory, request) -> Path:
    return untrained_recurrent_bundle(tmp_path_factory.mktemp("recurrent") / "rec.bundle", memory=request.param)


@pytest.fixture(scope="module")
def rec(rec_dir) -> Bundle:
    return Bundle.load(rec_dir)


def glyphs(n: int, seed: int) -> np.ndarray:
    """``n`` random sparse 28x28 'drawings' (float32 in [0, 1], 1 = ink)."""
    g = np.random.default_rng(seed)
    return (g.random((n, 28, 28)) < 0.15).astype(np.float32)


# ---------------------------------------------------------------- the rule against a float64 oracle

def gru_oracle(method: Recurrent, memory: np.ndarray, support: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each class's memory after a float64 GRU step per own sample, in row order (torch's gate layout)."""
    p = {k: v.detach().double().numpy() for k, v in method.gru.named_parameters()}
    H = method.hidden
    h = memory.astype(np.float64).copy()
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    for x, c in zip(support.astype(np.float64), labels):
        gi, gh = p["weight_ih_l0"] @ x + p["bias_ih_l0"], p["weight_hh_l0"] @ h[c] + p["bias_hh_l0"]
        r, z = sig(gi[:H] + gh[:H]), sig(gi[H:2 * H] + gh[H:2 * H])
        n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
        h[c] = (1.0 - z) * n + z * h[c]
    return h


def memory_oracle(method: Recurrent, memory: np.ndarray, support: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The whole memory row in float64: the GRU part, then (class-mean layout) the running mean and count
    summed sample by sample."""
    H = method.hidden
    h = gru_oracle(method, memory[:, :H], support, labels)
    if not method.class_mean:
        return h
    n = memory[:, -1].astype(np.float64).copy()
    total = memory[:, H:-1].astype(np.float64) * n[:, None]
    for x, c in zip(support.astype(np.float64), labels):
        total[c] += x
        n[c] += 1.0
    return np.concatenate([h, total / np.maximum(n, 1.0)[:, None], n[:, None]], 1)


def readout_oracle(method: Recurrent, memory: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w_o, b_o = method.readout.weight.detach().double().numpy(), method.readout.bias.detach().double().numpy()
    v, s = method.bias_readout.weight.detach().double().numpy()[0], float(method.log_scale.detach().exp())
    h = memory[:, :method.hidden]
    p = h @ w_o.T + b_o
    if method.class_mean:                                          # mean + correction / count
        p = memory[:, method.hidden:-1] + p / np.maximum(memory[:, -1:], 1.0)
    return 2.0 * s * p, -s * (p * p).sum(1) + h @ v


def nudged_rule(seed: int, dim: int = 24, hidden: int = 16, memory: str = "class_mean") -> Recurrent:
    torch.manual_seed(seed)
    m = Recurrent(dim, hidden=hidden, memory=memory).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("layout", ["class_mean", "gru"])
@pytest.mark.parametrize("C,S", [(2, 1), (5, 5), (5, 23), (20, 20)])
def test_update_graph_equals_torch_and_the_float64_oracle(C, S, layout):
    m = nudged_rule(C * 100 + S, memory=layout)
    assert m.memory_width == (16 + 24 + 1 if layout == "class_mean" else 16)
    g = np.random.default_rng(S)
    support = g.standard_normal((S, m.dim)).astype(np.float32)
    labels = g.integers(0, C, S)
    onehot = np.eye(C, dtype=np.float32)[labels]
    memory = g.standard_normal((C, m.memory_width)).astype(np.float32)
    if layout == "class_mean":
        memory[:, -1] = g.integers(0, 6, C)                        # stored counts are whole numbers
    fresh = (np.arange(C) % 2).astype(np.float32)                 # odd classes start from the initial memory
    with torch.no_grad():
        initial = m.initial_memory(torch.from_numpy(onehot if S else np.eye(C, dtype=np.float32))).numpy()
    start = np.where(fresh[:, None] > 0, initial, memory)
    want_h = memory_oracle(m, start, support, labels)
    want_w, want_b = readout_oracle(m, want_h)
    with torch.no_grad():
        th, tw, tb = (t.numpy() for t in UpdateGraph(m)(*map(torch.from_numpy, (memory, fresh, support, onehot))))
    sess = ort.InferenceSession(update_graph(m), providers=["CPUExecutionProvider"])
    oh, ow, ob = sess.run(None, {"memory": memory, "fresh": fresh, "support_embeddings": support,
                                 "support_labels_onehot": onehot})
    for got in ((th, tw, tb), (oh, ow, ob)):
        np.testing.assert_allclose(got[0], want_h, atol=2e-5)
        np.testing.assert_allclose(got[1], want_w, atol=2e-4 * max(1, np.abs(want_w).max()))
        np.testing.assert_allclose(got[2], want_b, atol=2e-4 * max(1, np.abs(want_b).max()))


def test_the_class_mean_layout_starts_as_prototypical_networks():
    """Untrained, the class-mean rule's logits are Prototypical Networks' (squared distance to the
    exact class mean, times the scale) up to a per-query constant, whatever the order of the samples."""
    m = Recurrent(24, hidden=16, memory="class_mean").eval()
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(23, 24, generator=g), torch.randn(9, 24, generator=g)
    onehot = torch.eye(5)[torch.randint(0, 5, (23,), generator=g)]
    onehot[:5] = torch.eye(5)                                          # every class has a sample
    means = (onehot.t() @ support) / onehot.sum(0)[:, None]
    want = -((query[:, None] - means[None]) ** 2).sum(-1)
    with torch.no_grad():
        for order in (torch.arange(23), torch.arange(22, -1, -1)):
            got = m.classify(query, m.adapt(support[order], onehot[order]))
            diff = got - want
            torch.testing.assert_close(diff, diff[:, :1].expand_as(diff), atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout", ["class_mean", "gru"])
def test_adapt_is_the_update_from_the_initial_memory_and_skips_zero_rows(layout):
    m = nudged_rule(1, memory=layout)
    g = np.random.default_rng(0)
    support = torch.from_numpy(g.standard_normal((9, m.dim)).astype(np.float32))
    onehot = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])]
    with torch.no_grad():
        whole = m.adapt(support, onehot)
        masked = onehot.clone()
        masked[[3, 7]] = 0.0                                       # these two samples are skipped
        skipped = m.adapt(support, masked)
        dropped = m.adapt(support[[0, 1, 2, 4, 5, 6, 8]], onehot[[0, 1, 2, 4, 5, 6, 8]])
    torch.testing.assert_close(skipped["weight"], dropped["weight"])
    assert not torch.allclose(whole["weight"], skipped["weight"])
    want_h = memory_oracle(m, m.initial_memory(onehot).detach().numpy(), support.numpy(), onehot.argmax(1).numpy())
    np.testing.assert_allclose(whole["weight"].numpy(), readout_oracle(m, want_h)[0], atol=1e-4)


def test_new_runs_get_the_class_mean_layout_and_old_run_records_keep_the_gru_one():
    from edgemeta.train.trainer import TrainConfig

    assert TrainConfig.for_method("recurrent").method_kwargs == {"hidden": 128, "memory": "class_mean"}
    old = TrainConfig.from_json({"method": "recurrent", "image_size": [28, 28], "method_kwargs": {"hidden": 128}})
    new = TrainConfig.from_json({"method": "recurrent", "image_size": [28, 28],
                                 "method_kwargs": {"hidden": 64, "memory": "class_mean"}})
    assert old.method_kwargs == {"hidden": 128, "memory": "gru"}
    assert new.method_kwargs == {"hidden": 64, "memory": "class_mean"}
    rule = FewShotModel("conv4", "recurrent", method_kwargs=old.method_kwargs).method
    assert (rule.memory, rule.memory_width) == ("gru", 128)
    with pytest.raises(ValueError, match="memory must be one of"):
        Recurrent(8, memory="lstm")


def test_validation_scores_the_rule_as_exported_even_during_training():
    """Validation inside a training run uses the rule in eval mode (every support sample read, in the
    given order), draws nothing from torch's generator, and leaves the model in training mode."""
    from edgemeta.data.classes import ClassImages
    from edgemeta.train.trainer import validate

    g = np.random.default_rng(0)
    data = ClassImages(glyphs(8 * 12, 11)[:, None].astype(bool), np.arange(0, 96, 12, dtype=np.int64),
                       np.full(8, 12, np.int64), tuple(f"k{i}" for i in range(8)), np.arange(96, dtype=np.int64))
    torch.manual_seed(0)
    model = FewShotModel("conv4", "recurrent", method_kwargs={"hidden": 8})
    with torch.no_grad():
        for p in model.method.parameters():
            p.add_(0.3 * torch.from_numpy(g.standard_normal(tuple(p.shape)).astype(np.float32)))
    z = torch.from_numpy(g.standard_normal((96, model.embedding_dim)).astype(np.float32))
    cpu = torch.device("cpu")
    model.eval()
    want = validate(model, data, 5, 5, 3, 20, 7, cpu, z)
    model.train()
    torch.manual_seed(1)
    got = validate(model, data, 5, 5, 3, 20, 7, cpu, z)
    after = torch.rand(1)
    torch.manual_seed(1)
    assert got == want and torch.equal(after, torch.rand(1)) and model.training and model.method.training


def test_a_fraction_of_training_episodes_keeps_every_shot():
    support = torch.arange(40.0)[:, None].repeat(1, 8)
    onehot = torch.eye(8).repeat_interleave(5, 0)                       # 8 classes x 5 shots
    kept = {}
    for fraction in (0.0, 0.5, 1.0):
        m = Recurrent(8, hidden=4, full_shot_episodes=fraction).train()
        torch.manual_seed(0)
        kept[fraction] = [bool((m.training_support(support, onehot)[1].sum(0) == 5).all()) for _ in range(40)]
    assert not any(kept[0.0]) and all(kept[1.0]) and 5 < sum(kept[0.5]) < 35
    with pytest.raises(ValueError, match="full_shot_episodes"):
        Recurrent(8, full_shot_episodes=1.5)


def test_training_support_is_shuffled_and_keeps_one_to_all_shots_of_each_class():
    m = Recurrent(8, hidden=4).train()
    support = torch.arange(40.0)[:, None].repeat(1, 8)                 # row i holds the value i
    onehot = torch.eye(8).repeat_interleave(5, 0)                       # 8 classes x 5 shots, class-major
    seen_counts, orders = set(), set()
    for seed in range(30):
        torch.manual_seed(seed)
        s, oh = m.training_support(support, onehot)
        counts = oh.sum(0)
        assert ((counts >= 1) & (counts <= 5)).all()
        kept = s[:, 0][oh.sum(1) > 0]
        assert all(int(oh[i].argmax()) == int(s[i, 0]) // 5 for i in range(40) if oh[i].sum() > 0)
        seen_counts |= set(counts.long().tolist())
        orders.add(tuple(kept.long().tolist()))
    assert seen_counts == {1, 2, 3, 4, 5} and len(orders) == 30


# ---------------------------------------------------------------- online learning in the runtime

def test_a_recurrent_bundle_gets_the_online_classifier_and_format_version_3(rec_dir, rec):
    assert type(FewShotClassifier(rec_dir)) is OnlineClassifier
    assert type(FewShotClassifier(rec)) is OnlineClassifier
    section = rec.manifest["recurrent"]
    layout = {"gru_class_mean": 32 + 64 + 1, "gru_class_memory": 32}     # GRU state [+ class mean + count]
    assert rec.manifest["format_version"] == 3 and section["gru_hidden"] == 32
    assert rec.memory_update.hidden == section["hidden"] == layout[section["rule"]]


def test_partial_fit_in_parts_equals_fit_in_that_order(rec):
    x, y = glyphs(24, 0), [f"c{i % 4}" for i in range(24)]
    q = glyphs(7, 1)
    whole = FewShotClassifier(rec).fit(x, y)
    parts = FewShotClassifier(rec)
    for lo, hi in ((0, 1), (1, 3), (3, 11), (11, 24)):              # one class alone first: no head yet
        parts.partial_fit(x[lo:hi], y[lo:hi])
    if rec.manifest["recurrent"]["rule"] == "gru_class_memory":      # GRU steps alone: bit for bit
        np.testing.assert_array_equal(parts.decision_function(q), whole.decision_function(q))
        np.testing.assert_array_equal(parts._memory.memory, whole._memory.memory)
    else:                                                            # a mean updated in parts: to float rounding
        np.testing.assert_array_equal(parts._memory.memory[:, :32], whole._memory.memory[:, :32])
        np.testing.assert_allclose(parts._memory.memory, whole._memory.memory, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(parts.decision_function(q), whole.decision_function(q), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(parts.predict(q), whole.predict(q))
    assert parts.class_counts() == {"c0": 6, "c1": 6, "c2": 6, "c3": 6}
    # the same samples in another order give another (order-dependent) memory
    other = FewShotClassifier(rec).fit(x[::-1], y[::-1])
    assert not np.array_equal(other._memory.memory, whole._memory.memory)
    if rec.manifest["recurrent"]["rule"] == "gru_class_mean":       # ... except the exact mean and count
        np.testing.assert_allclose(other._memory.memory[:, 32:], whole._memory.memory[:, 32:], atol=1e-6)
        e = np.random.default_rng(0).standard_normal((24, 64)).astype(np.float32)
        held = FewShotClassifier(rec).fit_embeddings(e, y)._memory.memory
        means = np.stack([e[[i for i in range(24) if y[i] == c]].mean(0) for c in ("c0", "c1", "c2", "c3")])
        np.testing.assert_allclose(held[:, 32:-1], means, atol=1e-5)
        np.testing.assert_array_equal(held[:, -1], [6, 6, 6, 6])


def test_partial_fit_updates_only_the_classes_it_reads(rec):
    x, y = glyphs(12, 2), [i % 3 for i in range(12)]
    clf = FewShotClassifier(rec).fit(x, y)
    before = clf._memory
    clf.partial_fit(glyphs(2, 3), [1, 1])
    after = clf._memory
    np.testing.assert_array_equal(after.memory[[0, 2]], before.memory[[0, 2]])
    np.testing.assert_array_equal(after.params["weight"][[0, 2]], before.params["weight"][[0, 2]])
    assert not np.array_equal(after.memory[1], before.memory[1])
    assert clf.class_counts() == {0: 4, 1: 6, 2: 4}


def test_forget_a_class_is_exact_and_one_sample_cannot_be_forgotten(rec):
    x, y = glyphs(15, 4), np.array(["a", "b", "c"] * 5)
    q = glyphs(5, 5)
    clf = FewShotClassifier(rec).fit(x, y).forget("b")
    keep = y != "b"
    without = FewShotClassifier(rec).fit(x[keep], y[keep])
    assert list(clf.classes_) == ["a", "c"]
    np.testing.assert_array_equal(clf.decision_function(q), without.decision_function(q))
    with pytest.raises(InputError, match="cannot forget 'b'"):
        clf.forget("b")
    with pytest.raises(InputError, match="one sample cannot be removed"):
        clf.forget_sample("a", 0)


def test_state_holds_the_memory_and_no_embeddings(rec, rec_dir, tmp_path):
    x, y = glyphs(10, 6), [1, 2] * 5
    clf = FewShotClassifier(rec).fit(x, y)
    clf.save(tmp_path / "a.state")
    st = decode_state((tmp_path / "a.state").read_bytes())
    width = rec.memory_update.hidden
    assert st.embeddings.shape == (0, 64) and st.memory.shape == (2, width) and list(st.memory_shots) == [5, 5]
    back = FewShotClassifier.load(rec_dir, tmp_path / "a.state")
    assert type(back) is OnlineClassifier and back.class_counts() == {1: 5, 2: 5}
    q = glyphs(6, 7)
    np.testing.assert_array_equal(back.decision_function(q), clf.decision_function(q))
    # more shots of known classes: the state does not grow
    clf.partial_fit(glyphs(40, 8), [1, 2] * 20)
    clf.save(tmp_path / "b.state")
    assert (tmp_path / "b.state").stat().st_size == (tmp_path / "a.state").stat().st_size
    # and it continues exactly where it stopped
    back.partial_fit(glyphs(40, 8), [1, 2] * 20)
    np.testing.assert_array_equal(back.decision_function(q), clf.decision_function(q))


def test_states_of_the_other_kind_are_refused(rec_dir, shipped_bundle_dir, tmp_path):
    FewShotClassifier(rec_dir).fit(glyphs(4, 9), [0, 1, 0, 1]).save(tmp_path / "rec.state")
    FewShotClassifier(shipped_bundle_dir).fit(glyphs(4, 9), [0, 1, 0, 1]).save(tmp_path / "proto.state")
    with pytest.raises(StateError, match="saved for another bundle"):
        FewShotClassifier.load(shipped_bundle_dir, tmp_path / "rec.state")
    with pytest.raises(StateError, match="saved for another bundle"):
        FewShotClassifier.load(rec_dir, tmp_path / "proto.state")


def state_file(rec: Bundle, arrays: list[tuple[str, np.ndarray]]) -> bytes:
    """A version-2 state file with exactly ``arrays`` beside empty embeddings (checksum correct)."""
    arrays = [("embeddings", np.zeros((0, 64), "<f4")), ("sample_class", np.zeros(0, "<i8")), *arrays]
    index = {"arrays": [{"name": n, "dtype": {"f": "float32", "i": "int64"}[a.dtype.kind], "shape": list(a.shape)}
                        for n, a in arrays],
             "meta": {"bundle_id": rec.identity, "labels": ["a", "b"], "method": "recurrent"}}
    blob = json.dumps(index).encode()
    body = struct.pack("<I", len(blob)) + blob + b"".join(a.tobytes() for _, a in arrays)
    header = {"encryption": "none", "format": "edgemeta-state", "payload_bytes": len(body),
              "payload_sha256": hashlib.sha256(body).hexdigest(), "version": 2}
    return b"EDGEMETA-STATE\n" + json.dumps(header).encode() + b"\n" + body


def memory_state(rec: Bundle, **change) -> bytes:
    fields = dict(bundle_id=rec.identity, labels=["a", "b"], embeddings=np.zeros((0, 64), np.float32),
                  sample_class=np.zeros(0, np.int64), head={}, meta={"method": "recurrent", "ink": "auto"},
                  memory=np.ones((2, 32), np.float32), memory_shots=np.array([3, 1], np.int64))
    return encode_state(StateData(**{**fields, **change}))


@pytest.mark.parametrize("change,message", [
    ({"memory": np.ones((3, 32), np.float32)}, "one row per label"),
    ({"memory": np.ones(32, np.float32)}, "one row per label"),
    ({"memory": np.full((2, 32), np.nan, np.float32)}, "NaN or infinity"),
    ({"memory_shots": np.array([3, 0], np.int64)}, "at least one sample per class"),
    ({"memory_shots": np.array([3], np.int64)}, "at least one sample per class"),
    ({"embeddings": np.ones((1, 64), np.float32), "sample_class": np.zeros(1, np.int64)}, "both memory and 1"),
])
def test_hostile_memory_states_are_refused(rec, change, message):
    with pytest.raises(StateError, match=message):
        decode_state(memory_state(rec, **change))


def test_truncated_flipped_and_half_memory_states_are_refused(rec, rec_dir, tmp_path):
    good = memory_state(rec)
    assert decode_state(good).memory.shape == (2, 32)
    with pytest.raises(StateError, match="truncated"):
        decode_state(good[:-5])
    flipped = bytearray(good)
    flipped[-9] ^= 0x40
    with pytest.raises(StateError, match="checksum"):
        decode_state(bytes(flipped))
    # memory without its counts, or of another dtype (bodies written by hand with a valid checksum)
    memory = np.ones((2, 32), np.float32)
    with pytest.raises(StateError, match="memory_shots"):
        decode_state(state_file(rec, [("memory", memory)]))
    with pytest.raises(StateError, match="memory must be a float32"):
        decode_state(state_file(rec, [("memory", np.ones((2, 32), "<i8")), ("memory_shots", np.ones(2, "<i8"))]))
    # the wrong memory width for this bundle
    (tmp_path / "w.state").write_bytes(memory_state(rec, memory=np.ones((2, 16), np.float32)))
    with pytest.raises(StateError, match=rf"expected \[C, {rec.memory_update.hidden}\]"):
        FewShotClassifier.load(rec_dir, tmp_path / "w.state")


def test_a_state_whose_memory_counts_disagree_with_memory_shots_is_refused(rec, rec_dir, tmp_path):
    """The class-mean layout's rows end with their sample count; a state whose count disagrees with
    memory_shots (an altered file) is refused on load; the GRU-only layout has no count to compare."""
    clf = FewShotClassifier(rec).fit(glyphs(6, 12), ["a", "b", "a", "b", "a", "b"])
    clf.save(tmp_path / "good.state")
    st = decode_state((tmp_path / "good.state").read_bytes())
    st.memory_shots[0] += 1
    (tmp_path / "altered.state").write_bytes(encode_state(st))
    FewShotClassifier.load(rec_dir, tmp_path / "good.state")
    if rec.manifest["recurrent"]["rule"] == "gru_class_mean":
        with pytest.raises(StateError, match=r"memory row of class 'a' counts 3 samples where memory_shots says 4"):
            FewShotClassifier.load(rec_dir, tmp_path / "altered.state")
    else:
        assert FewShotClassifier.load(rec_dir, tmp_path / "altered.state").class_counts() == {"a": 4, "b": 3}


# ---------------------------------------------------------------- the manifest section

def test_manifest_section_rules(rec):
    m = copy.deepcopy(rec.manifest)
    assert writer_version(m) == 3
    validate_manifest(m)
    for edit, message in [
        (lambda d: d.pop("recurrent"), "needs the manifest section recurrent"),
        (lambda d: d.update(format_version=2), "section recurrent needs format version 3"),
        (lambda d: d["recurrent"].update(hidden=0), r"recurrent.hidden must be an integer"),
        (lambda d: d["recurrent"].update(graph="adapt.onnx"), r"recurrent.graph must be 'update.onnx'"),
        (lambda d: d["recurrent"].update(rule="lstm_memory"), r"recurrent.rule must be one of"),
        (lambda d: d["recurrent"].update(gru_hidden=0), r"recurrent.gru_hidden must be an integer"),
        (lambda d: d["recurrent"].update(outputs=["prototypes"]), "expected head.outputs"),
        (lambda d: d["files"].pop("update.onnx"), "must list the recurrent update graph"),
        (lambda d: d.update(method="proto", head={**d["head"], "method": "proto", "outputs": ["prototypes"]}),
         "section recurrent needs method 'recurrent'"),
    ]:
        bad = copy.deepcopy(m)
        edit(bad)
        with pytest.raises(BundleError, match=message):
            validate_manifest(bad)


def test_a_bundle_whose_update_graph_breaks_the_contract_is_refused(rec_dir, tmp_path):
    manifest = json.loads((rec_dir / "manifest.json").read_text())
    files = {n: (rec_dir / n).read_bytes() for n in manifest["files"]}
    files["update.onnx"] = files["adapt.onnx"]                        # wrong inputs and outputs
    manifest = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "files", "integrity")}
    write_bundle(tmp_path / "bad", manifest, files)
    with pytest.raises(BundleError, match="update.onnx has inputs"):
        Bundle.load(tmp_path / "bad")


# ---------------------------------------------------------------- colour bundles

def test_colour_recurrent_bundle_learns_photos_online(tmp_path):
    out = untrained_recurrent_bundle(tmp_path / "colour.bundle", seed=5, hidden=16, image_size=(84, 84), channels=3)
    b = Bundle.load(out)
    assert b.channels == 3 and b.embedding_dim == 1600 and b.manifest["format_version"] == 3
    if SAMPLE.is_dir():
        from PIL import Image

        folders = sorted(p for p in SAMPLE.iterdir() if p.is_dir())[:3]
        files = [sorted(f.glob("*.jpg"))[:4] for f in folders]
        photos = [np.asarray(Image.open(f).convert("RGB")) for fs in files for f in fs]
        labels = [f.name for f, fs in zip(folders, files) for _ in fs]
    else:                                          # no sample photos here: random RGB images of mixed sizes
        g = np.random.default_rng(0)
        photos = [g.integers(0, 256, (60 + 7 * i, 90, 3), dtype=np.uint8) for i in range(12)]
        labels = [i % 3 for i in range(12)]
    whole = FewShotClassifier(b).fit(photos, labels)
    parts = FewShotClassifier(b).partial_fit(photos[:5], labels[:5]).partial_fit(photos[5:], labels[5:])
    np.testing.assert_allclose(parts.decision_function(photos[:3]), whole.decision_function(photos[:3]),
                               rtol=1e-5, atol=1e-5)                # the class mean updated in parts: float rounding
    assert whole.predict(photos).shape == (12,)


def test_online_learning_never_imports_torch(rec_dir, tmp_path):
    """Loading a recurrent bundle, partial_fit, save and load run on numpy + onnxruntime alone."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from edgemeta.runtime import FewShotClassifier
        g = np.random.default_rng(0)
        x = (g.random((6, 28, 28)) < 0.2).astype(np.float32)
        clf = FewShotClassifier({str(rec_dir)!r}).partial_fit(x[:3], [0, 1, 0]).partial_fit(x[3:], [1, 0, 1])
        clf.save({str(tmp_path / "s.state")!r})
        back = FewShotClassifier.load({str(rec_dir)!r}, {str(tmp_path / "s.state")!r})
        assert type(back).__name__ == "OnlineClassifier" and back.class_counts() == {{0: 3, 1: 3}}
        print(sorted(m for m in ("torch", "onnx", "tqdm") if m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_unlabeled_samples_are_refused_by_a_recurrent_bundle(rec):
    with pytest.raises(InputError, match="labelled samples only"):
        FewShotClassifier(rec).fit(glyphs(4, 1), [0, 1, 0, 1], unlabeled=glyphs(2, 2))
