"""Where does a multi-area fit's channel strength go wrong: the paths, the guide, or the field?

For a ``pyrodyn fit --model multi-area`` run on data with ground truth, prints per channel:

1. the strength of the fitted channel on the test trials' posterior-mean states, and on the
   *true* states mapped affinely into the fit's coordinates (the map fit on those trials, per
   area). Equal figures put the error in the fitted field, not in the inferred paths;
2. one EM step in every channel's scale given the posterior's paths of the training trials
   (score over Gauss-Newton curvature of the path density, ``--draws`` per trial), at each
   refinement step count. A step near 0 says the fit is at the optimum its paths imply; a
   step that grows with refinement says the amortized guide held the channel back.

Run from the repository root:

    .venv/bin/python bench/channel_bias.py RUN DATA [--refine 0 100 400]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pyrodyn.analysis import apply_affine, fit_affine, true_communication_strengths
from pyrodyn.analysis.communication import channel_strengths
from pyrodyn.cli import _load_run
from pyrodyn.data import load
from pyrodyn.inference import has_channel_scales, posterior, posterior_means
from pyrodyn.inference.laplace import _scale_score_and_curvature
from pyrodyn.models import sites


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--refine", type=int, nargs="+", default=[0, 100, 400])
    parser.add_argument("--draws", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config, model, guide, data = _load_run(Path(args.run), load(args.data))
    model.parameter_posterior = None  # the fitted weights themselves
    train, test = data.select("train"), data.select("test")
    truth = test.truth
    means = posterior_means(model, guide, test, refine_steps=config.refine_steps)[0]
    split = model.field.split(torch.as_tensor(means))
    states = {area: z.numpy() for area, z in split.items()}
    mapped = {area: apply_affine(truth.latents[..., truth.latent_area == area],
                                 fit_affine(truth.latents[..., truth.latent_area == area], z))
              for area, z in states.items()}
    true_strengths = true_communication_strengths(test)
    bin_time = model.solver.step_size
    print("channel: true strength; fitted channel on posterior means / on true states mapped")
    with torch.no_grad():
        for name, channel in model.field.channels.items():
            target, _, source = name.partition("<-")
            on = [channel_strengths(channel(torch.as_tensor(z[source], dtype=torch.float32))
                                    .numpy(), z[target], bin_time=bin_time)
                  for z in (states, mapped)]
            print(f"  {name}: {true_strengths[name]:.4f}; {on[0]:.4f} / {on[1]:.4f}")
    if not has_channel_scales(model):
        return
    names = list(model.field.channels)
    for steps in args.refine:
        post = posterior(model, guide, train, num_samples=args.draws, refine_steps=steps,
                         parameter_draws=False)
        latents = torch.as_tensor(post.draws[sites.LATENTS])
        inputs = None if train.inputs is None else torch.as_tensor(train.inputs)
        with torch.no_grad():
            score, curvature = _scale_score_and_curvature(model, names, latents, inputs)
        per_trial = score.mean(0)  # (trial, channel)
        total = curvature.mean(0).sum(0)
        step = torch.linalg.solve(total, per_trial.sum(0))
        se = per_trial.std(0) * np.sqrt(per_trial.shape[0]) / torch.diagonal(total)
        print(f"refine {steps}: EM step in each scale " + ", ".join(
            f"{n} {step[i]:+.4f} (se {se[i]:.4f})" for i, n in enumerate(names)), flush=True)


if __name__ == "__main__":
    main()
