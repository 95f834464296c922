"""Build hook: ship the top-level ``yaml/`` (the one source of the defaults) inside the package.

A built distribution (``pip install .``, a wheel) gets a copy at ``recbole_hymoe/yaml/``, made
here at build time; a checkout and an editable install read ``yaml/`` in place (see
``recbole_hymoe/paths.py``). Everything else is declared in ``setup.cfg``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

YAML_SOURCE = Path(__file__).resolve().parent / "yaml"


class BuildPyWithYaml(build_py):
    """``build_py`` that also copies ``yaml/`` to ``recbole_hymoe/yaml/`` in the build folder."""

    def run(self):
        super().run()
        if self.editable_mode:  # the editable install reads yaml/ from the checkout
            return
        target = Path(self.build_lib) / "recbole_hymoe" / "yaml"
        shutil.rmtree(target, ignore_errors=True)  # no file deleted from yaml/ survives in a reused build folder
        self.copy_tree(str(YAML_SOURCE), str(target))


setup(cmdclass={"build_py": BuildPyWithYaml})
