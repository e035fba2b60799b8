"""The table of docs/semi-supervised.md: labelled-only vs refined accuracy on Omniglot's test classes.

Runs :func:`edgemeta.semisupervised_eval.evaluate_semi` (what ``edgemeta eval BUNDLE --unlabeled M
--distractors D --queries 5 --json`` runs, same seed, same episodes) for every setting, embedding each
test set once per bundle instead of once per setting. Writes one JSON object per line to ``--out``.

    python tools/semi_supervised_table.py BUNDLE [BUNDLE ...] --out table.jsonl
    python tools/semi_supervised_table.py BUNDLE --out ablation.jsonl --unmasked   # the mask's worth

``--unmasked`` replaces each bundle's refine graph, in memory, by plain soft k-means (the same rule with
the distractor mask switched off: every unlabelled sample weighs its soft assignment; needs torch).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgemeta.data.sources import evaluation_set
from edgemeta.runtime.loaded_bundle import Bundle
from edgemeta.runtime.semisupervised import Refiner
from edgemeta.semisupervised_eval import embed_classes, evaluate_semi


def settings(ways: int, shots: int, m_values: tuple[int, ...]) -> list[tuple[int, int]]:
    """(M, D) pairs: M = 0 once (no unlabelled sample, so no distractor), then each M with D = 0 and D = N."""
    return [(0, 0)] + [(m, d) for m in m_values if m for d in (0, ways)]


def unmasked_refiner(bundle: Bundle) -> Refiner:
    """The bundle's refinement without its distractor mask (beta far above any relative distance, so
    every mask weight is 1): Ren et al.'s plain soft k-means at the head's scale."""
    from edgemeta.train.refine_export import refine_graph
    from edgemeta.train.soft_kmeans import MaskedSoftKMeans

    module = MaskedSoftKMeans(float(bundle.manifest["head"]["scale"]), beta=1e6, gamma=1.0)
    return Refiner(bundle, refine_graph(module, bundle.embedding_dim))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--unlabeled", type=int, nargs="+", default=[0, 5, 10])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unmasked", action="store_true", help="plain soft k-means instead of the bundle's masked one")
    ap.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    args = ap.parse_args()
    with args.out.open("a") as fh:
        for path in args.bundles:
            bundle = Bundle.load(path)
            if args.unmasked:
                bundle.refiner = unmasked_refiner(bundle)
            for rotations in (True, False):
                test, name = evaluation_set(bundle.manifest["provenance"], bundle.preprocess_spec, None, None,
                                            rotations=rotations)
                t0 = time.perf_counter()
                emb = embed_classes(bundle, test)
                print(f"{path} {name}: embedded {test.n_images} images in {time.perf_counter() - t0:.0f}s", flush=True)
                for ways in args.ways:
                    for shots in args.shots:
                        for m, d in settings(ways, shots, tuple(args.unlabeled)):
                            res = evaluate_semi(bundle, test, ways, shots, args.queries, m, d, args.episodes,
                                                args.seed, embeddings=emb)
                            res.update({"split": name, "bundle": str(path), "method": bundle.method,
                                        "rule": "soft k-means, no mask" if args.unmasked else "masked soft k-means"})
                            fh.write(json.dumps(res) + "\n")
                            fh.flush()
                            print(f"{name} {ways}w{shots}s M={m} D={d}: {res['labelled_accuracy']:.2f} -> "
                                  f"{res['refined_accuracy']:.2f} ({res['gain']:+.2f} ± {res['gain_ci95']:.2f})", flush=True)


if __name__ == "__main__":
    main()
