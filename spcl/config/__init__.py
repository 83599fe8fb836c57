"""Config tree of spcl: `get_cfg()` for the documented defaults, `load_config()` for a run,
`check_drift` for reruns into an existing run folder."""
from .config import (CfgNode, ConfigKeyError, dump_config, get_cfg, load_config, merge_from_file, merge_from_list,
                     validate)
from .drift import ConfigDriftError, check_drift, config_drift

__all__ = ["CfgNode", "ConfigKeyError", "ConfigDriftError", "get_cfg", "load_config", "merge_from_file",
           "merge_from_list", "dump_config", "validate", "check_drift", "config_drift"]
