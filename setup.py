"""Build and install t2i: the `t2icli` package and its C++/CUDA extension `t2icli._C`.

Install with the torch that is already in the environment:

    pip install --no-build-isolation --use-pep517 -e .

The CPU kernels are always built; the CUDA kernels are added when torch sees a GPU or
T2I_BUILD_CUDA=1 is set and a CUDA toolkit is found. If the extension cannot be built
(no compiler, no torch at build time) the package still installs, and `t2icli.ops`
JIT-builds the extension on first use or falls back to the pure-PyTorch reference.
"""

import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _ext_modules():
    """The extension modules to build, or [] when torch is not importable at build time."""
    if os.environ.get("T2I_NO_EXT") == "1":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except Exception as exc:  # no torch at build time: pure-Python install
        print(f"t2i setup: torch not importable ({exc}); installing without the extension", file=sys.stderr)
        return [], {}

    cpp = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cu = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    if not cpp:
        return [], {}
    want_cuda = torch.cuda.is_available() or os.environ.get("T2I_BUILD_CUDA") == "1"
    cxx = ["-O3", "-std=c++20"]
    if sys.platform != "win32":
        cxx += ["-fopenmp"]
    if want_cuda and CUDA_HOME is not None and cu:
        ext = CUDAExtension(
            "t2icli._C",
            cpp + cu,
            define_macros=[("T2I_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math", "-std=c++20"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension("t2icli._C", cpp, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])

    class OptionalBuildExt(BuildExtension):
        """Build the extension, but let the install succeed without it (ops then JIT-build or fall back).

        T2I_REQUIRE_EXT=1 makes a failed build fail the install.
        """

        def run(self):
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any compiler/toolchain failure
                if os.environ.get("T2I_REQUIRE_EXT") == "1":
                    raise
                print(f"t2i setup: WARNING: the C++ extension did not build ({exc}); t2i will try a JIT "
                      "build on first use, else use the slower pure-PyTorch ops", file=sys.stderr)

    return [ext], {"build_ext": OptionalBuildExt.with_options(use_ninja=True)}


ext_modules, cmdclass = _ext_modules()

setup(
    name="t2icli",
    version="0.1.0",
    description="Train, sample and evaluate text-to-image GANs (AttnGAN, StackGAN, StackGAN++, GAN-INT-CLS)",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["t2icli", "t2icli.*"]),
    # nltk is not needed: t2icli.data.text applies nltk's regular expression itself (a test cross-checks the two)
    # torch 2.5: torch.library.register_fake / register_autocast for the compiled ops (t2icli/ops/_registration.py)
    install_requires=["torch>=2.5", "ninja", "click>=8", "rich", "numpy", "pillow", "scipy"],
    # tensorboard: `--tensorboard` on every trainer writes TensorBoard event files (torch.utils.tensorboard).
    # The web framework of `t2i serve` is optional too: nothing else needs it, and FastAPI + uvicorn + pydantic are
    # a heavy install for users who only train. httpx drives the API tests; selenium the browser test (with the
    # system's chromium and chromedriver: nothing is downloaded).
    extras_require={"tensorboard": ["tensorboard"], "serve": ["fastapi>=0.100", "uvicorn>=0.20"],
                    "test": ["pytest", "nltk", "httpx", "selenium>=4.11", "fastapi>=0.100", "uvicorn>=0.20"]},
    package_data={"t2icli.serve": ["static/*"], "t2icli.pretrained": ["toybirds/*", "evaluators/*"]},
    entry_points={"console_scripts": ["t2i = t2icli.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
