from setuptools import find_packages, setup

setup(
    name="blockmover",
    version="0.1.0",
    description="Move stateful applications with their block-storage "
                "volumes between the nodes of a cluster.",
    long_description=open("README.rst").read(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.11",
    packages=find_packages(include=["blockmover", "blockmover.*",
                                    "agents", "agents.*"]),
    install_requires=[
        "twisted[tls]>=23.10,<27",
        "pyrsistent>=0.19,<1",
        "openstacksdk>=3.0,<5",
        "keystoneauth1>=5.0,<6",
        "zope.interface>=6.0,<9",
        "eliot>=1.14,<2",
        "treq>=23.11,<27",
        "PyYAML>=6.0,<7",
        "cryptography>=42,<51",
        "prometheus_client>=0.20,<1",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.2,<3",
            "hypothesis>=6.90,<7",
            "pymongo>=4.6,<5",
            "SecantusDB>=0.7.0b3,<0.8",
        ],
        "demo": [
            "pymongo>=4.6,<5",
            "SecantusDB>=0.7.0b3,<0.8",
        ],
    },
    entry_points={
        "console_scripts": [
            "blockmover=blockmover.cli:main",
            "blockmover-control=blockmover.control.main:main",
            "blockmover-agent=agents.main:main",
            "blockmover-deploy=blockmover.deploy:main",
            "blockmover-cloud=blockmover.emulator.main:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Twisted",
        "Operating System :: POSIX :: Linux",
    ],
)
