"""Plugin discovery through the `mii_core.plugins` entry-point group.

Needs the packages installed (pip install -e . -e kernels -e architectures/llama): entry points
exist only for installed distributions.
"""

import os
import re
import subprocess
import sys
import textwrap

from support.fake_plugins import install_fake_plugin

BROKEN_MODULE = "mii_broken_plugin_for_tests"


def run_python(args, *, extra_env=None, extra_path=None):
    env = dict(os.environ, **(extra_env or {}))
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


def test_plugins_command_lists_llama():
    code, output = run_python(["-m", "mii_core", "plugins"])
    assert code == 0, output
    assert "llama" in output


def test_disallowed_plugin_names_the_missing_one(checkpoint):
    script = textwrap.dedent(
        f"""
        import mii_core
        try:
            mii_core.pipeline({str(checkpoint("gqa"))!r})
        except Exception as error:
            print(type(error).__name__, error)
            raise SystemExit(3)
        print("pipeline loaded although its plugin was not allowed")
        """
    )
    code, output = run_python(["-c", script], extra_env={"MII_CORE_PLUGINS": "nonexistent"})
    assert code == 3, output
    assert "llama" in output
    assert "pip install mii-plugin-llama" in output


def make_broken_distribution(folder):
    """A throwaway installed distribution whose plugin module raises on import."""
    folder.mkdir(parents=True)
    install_fake_plugin(folder, "broken", 'raise ImportError("this plugin is broken on purpose")\n',
                        module=BROKEN_MODULE, distribution="mii-broken-plugin")
    return folder


def test_broken_plugin_is_reported_and_skipped(tmp_path):
    site = make_broken_distribution(tmp_path / "site")
    code, output = run_python(["-m", "mii_core", "plugins"], extra_path=site)
    assert code == 0, output
    assert re.search(r"broken.*(fail|error)|(fail|error).*broken", output, re.IGNORECASE | re.DOTALL), output
    assert "llama" in output
