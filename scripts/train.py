"""Train PatchNet with Hugging Face Accelerate.

    accelerate launch scripts/train.py --config configs/demo.yaml [--output_dir DIR] [--resume latest|PATH]
        [--push_to_hub --hub_model_id NAME/REPO] [section.key=value ...]

Any config key can be overridden on the command line, e.g. `training.learning_rate=0.05 model.backbone=resnet34`.
The resolved configuration is written to `<output_dir>/config.yaml`.
"""

import argparse
import json
import sys

from patchnet_hf.data import DatasetFormatError
from patchnet_hf.training import train
from patchnet_hf.training_config import ConfigError, load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see configs/).")
    parser.add_argument("--output_dir", help="overrides training.output_dir")
    parser.add_argument("--resume", help="'latest' (newest complete checkpoint of output_dir) or a checkpoint path")
    parser.add_argument("--push_to_hub", action="store_true", default=None, help="push the best model at the end")
    parser.add_argument("--hub_model_id", help="Hub repository id, e.g. your-name/patchnet-demo")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides, training__output_dir=args.output_dir,
                             hub__push_to_hub=args.push_to_hub, hub__hub_model_id=args.hub_model_id)
        summary = train(config, resume=args.resume)
    except ConfigError as error:
        sys.exit(f"config error: {error}")
    except (DatasetFormatError, FileExistsError, FileNotFoundError) as error:
        # Input problems found before the first step: the message names the file, rows or option.
        sys.exit(f"error: {error}")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
