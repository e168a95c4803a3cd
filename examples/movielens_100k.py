"""MovieLens-100K end to end: the GDMix paper's protocol, reference and tuned.

Run with ``make demo``. Finds the GroupLens files through ``$GDMIX_DATA_DIR`` or the
cache (downloading them when missing), trains the reference configuration (l2 = 1
everywhere, one pass) and gdmix's tuned configuration (l2 search on validation,
several passes), and prints test AUC after each coordinate.
"""

from __future__ import annotations

import argparse
import logging

from gdmix.data.movielens import load_movielens_100k, split_movielens
from gdmix.examples.movielens import EXAMPLE_STAGES, run_example

PAPER = {"reference": [0.6237, 0.7058, 0.7599]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--save", help="save the tuned model to this directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    tables = split_movielens(load_movielens_100k(), seed=args.seed)
    print(f"MovieLens-100K: {sum(len(t) for t in tables)} ratings, label = rating > 3")
    print(
        "split: "
        + " / ".join(
            f"{n} {len(t)}" for n, t in zip(("train", "validation", "test"), tables, strict=True)
        )
    )
    reference = run_example(False, tables=tables)
    tuned = run_example(True, tables=tables)

    print()
    print(f"{'test AUC':<24}{'paper GLMix':>12}{'reference':>12}{'gdmix tuned':>13}")
    for i, (_, label) in enumerate(EXAMPLE_STAGES):
        print(
            f"{label:<24}{PAPER['reference'][i]:>12.4f}{reference.auc[i]:>12.4f}{tuned.auc[i]:>13.4f}"
        )
    print(f"{'training seconds':<24}{'':>12}{reference.seconds:>12.2f}{tuned.seconds:>13.2f}")
    params = tuned.model.metrics["params"]
    print("tuned hyper-parameters (chosen on validation): " + "; ".join(
        f"{k} " + ", ".join(f"{p}={v:g}" for p, v in ps.items() if v is not None)
        for k, ps in params.items()))  # fmt: skip
    if args.save:
        tuned.model.save(args.save)
        print(f"tuned model saved to {args.save}")


if __name__ == "__main__":
    main()
