"""The README opens with the two commands of a fresh machine: the quick start and the tests. CI's
.ci/run runs exactly the second; neither pins a torch version (an installed CUDA build must not be
replaced), and setup.py gives ranges that accept the supported pair."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)[:2]]


def test_quick_start_and_test_commands_come_first_and_pin_nothing():
    quick, tests = _readme_commands()
    assert quick.startswith("pip install") and "tools/train.py --config configs/toy.yaml" in quick
    assert tests.startswith("pip install") and "pytest" in tests
    for command in (quick, tests):
        assert "==" not in command and "torch" not in command.split("&&")[0].replace("pytorch", "")


def test_ci_runs_exactly_the_readme_test_command():
    _, tests = _readme_commands()
    lines = [ln.strip() for ln in open(os.path.join(ROOT, ".ci", "run")) if ln.strip() and not ln.startswith("#")]
    assert lines[-1] == tests


def test_setup_accepts_the_supported_torch_pair():
    setup = open(os.path.join(ROOT, "setup.py")).read()
    assert '"torch>=2.6"' in setup and '"torchvision>=0.21"' in setup
    assert not re.search(r'"torch(vision)?==', setup)
