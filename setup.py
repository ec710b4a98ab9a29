"""d2seg: Detectron2-style instance, semantic and panoptic segmentation on torchvision."""

from setuptools import find_packages, setup

setup(
    name="d2seg",
    version="0.1.0",
    description="Detectron2-style segmentation toolkit built on torchvision, fvcore and pycocotools",
    python_requires=">=3.10",
    packages=find_packages(include=["d2seg", "d2seg.*"]),
    package_data={"d2seg.serving": ["static/*.html", "static/*.js", "static/*.css"]},
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "pycocotools>=2.0.7",
        "faster-coco-eval>=1.6",
        "opencv-python-headless>=4.8",
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "torchmetrics>=1.3",
        "numpy>=1.24",
        "Pillow>=10.1",  # ImageFont.load_default(size=) in the Visualizer
        "PyYAML>=6",
        "matplotlib>=3.7",
        "tifffile>=2023.1",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.5",  # make test runs the files in parallel processes
            "hypothesis>=6.100",
            "labelme==6.3.1",  # rasterisation oracle in tests
            "labelme2coco==0.2.6",  # reference converter in bench/convert.py
            "segmentation-models-pytorch==0.6.0",  # reference U-Net in bench/models.py
            "httpx>=0.27",  # HTTP client of the serving tests and bench/serve.py
            "selenium>=4.20",  # drives Debian's headless chromium in the web-page test
            "psutil>=5.9",  # server memory in the serving soak test
        ],
        "annotate": ["labelme"],
        "tune": ["optuna>=4.0", "psycopg[binary]>=3.1"],  # psycopg: --storage postgresql://
        "serve": ["fastapi>=0.110", "fastapi-offline>=1.7", "uvicorn>=0.29",
                  "python-multipart>=0.0.9"],
    },
)
