# lit configuration that runs every GoogleTest binary (*Tests) in test/unit.
import os

import lit.formats

config.name = "STLM-Unit"
config.suffixes = []
config.test_source_root = os.path.join(config.stlm_obj_root, "test", "unit")
config.test_exec_root = config.test_source_root
config.test_format = lit.formats.GoogleTest(".", "Tests")
config.environment["STLM_SHARED_DIR"] = config.stlm_shared_dir

# A sanitized build (STLM_SANITIZE): see test/lit.cfg.py.
if config.stlm_sanitize:
    config.environment["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=1:"
                                          "allocator_may_return_null=1")
    config.environment["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
