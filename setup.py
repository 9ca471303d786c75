from setuptools import setup, find_packages, Extension
import re

with open('msrplib/__init__.py') as f:
    version = re.search(r"__version__ = '([^']+)'", f.read()).group(1)

with open('README.md') as f:
    long_description = f.read()

setup(
    name='msrplib',
    version=version,
    description='Message Session Relay Protocol (MSRP, RFC 4975/4976) library on gevent',
    long_description=long_description,
    long_description_content_type='text/markdown',
    license='MIT',
    packages=find_packages(include=['msrplib', 'msrplib.*']),
    # the Kamailio routing script that msrplib.testing.KamailioRelay renders
    package_data={'msrplib.testing': ['kamailio.cfg.in']},
    # the parser's C fast path; optional: without a compiler msrplib installs and runs as pure Python
    ext_modules=[Extension('msrplib._cparser', ['msrplib/_cparser.c'], optional=True)],
    python_requires='>=3.9',
    install_requires=[
        'gevent>=22.10',
        'zope.interface>=5.0',
        'cryptography>=3.4',
        'dnspython>=2.0',
        'tqdm>=4.0',
        'wsproto>=1.2',
    ],
    extras_require={
        'testing': ['pytest>=7', 'trustme>=1.0'],
        'test': ['pytest>=7', 'pytest-timeout>=2', 'hypothesis>=6', 'trustme>=1.0', 'twisted', 'psutil>=5.8'],
    },
    entry_points={
        'console_scripts': ['msrp = msrplib.cli:main'],
        # the fixtures msrp_session_pair, msrp_raw_peer, msrp_relay, msrp_wire for every pytest suite
        'pytest11': ['msrplib = msrplib.testing.pytest_plugin'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Communications :: Chat',
        'Topic :: Internet',
    ],
)
