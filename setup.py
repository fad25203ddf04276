from setuptools import find_packages, setup

setup(
    name="siaga",
    version="0.1.0",
    description="A gateway from citizens' messages on every platform to SP4N-LAPOR! and the 112 command centre.",
    python_requires=">=3.11",
    packages=find_packages(include=["gateway", "gateway.*", "plugins", "plugins.*"]) + ["twisted.plugins"],
    package_data={"twisted.plugins": ["siaga_dropin.py"], "plugins.channels": ["*.html"]},
    install_requires=[
        "twisted[tls]>=24.3",
        "treq>=23.11",
        "pluggy>=1.5",
        "pyyaml>=6.0",
        "prometheus-client>=0.20",
        "zope.interface>=6.0",
        "oauthlib>=3.2",
    ],
    extras_require={
        "test": ["pytest>=8", "ruff", "twilio", "capvalidator", "hypothesis"],
    },
    entry_points={"console_scripts": ["siaga = gateway.cli:main"]},
)
