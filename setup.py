"""Ships ``pytest_falmock.pth`` (the ``FAL_MOCK_URL`` start-up hook) into site-packages.

Everything else is in pyproject.toml. A ``.pth`` file must sit at the top of site-packages,
outside the package, which pyproject metadata cannot express: ``build_py`` copies it next to
the package in wheels, and into the editable wheel for ``pip install -e``.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "pytest_falmock.pth"


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH)
        if getattr(self, "editable_mode", False):  # PEP 660: the editable wheel's root
            target_dir = self.get_finalized_command("install").install_lib
        else:
            target_dir = self.build_lib
        self.copy_file(source, os.path.join(target_dir, PTH), preserve_mode=False)


setup(cmdclass={"build_py": BuildPyWithPth})
