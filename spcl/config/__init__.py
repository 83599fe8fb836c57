"""Config tree of spcl: `get_cfg()` for the documented defaults, `load_config()` for a run."""
from .config import (CfgNode, ConfigKeyError, dump_config, get_cfg, load_config, merge_from_file, merge_from_list,
                     validate)

__all__ = ["CfgNode", "ConfigKeyError", "get_cfg", "load_config", "merge_from_file", "merge_from_list",
           "dump_config", "validate"]
