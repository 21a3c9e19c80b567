"""The shared test library: everything a test (or a benchmark in ``bench/``) imports lives here.

``conftest.py`` files hold fixtures only, and test modules import nothing from one another:
a helper two files need is written once, in a module of this package named for what it is
(``tests/test_architecture.py`` checks both rules). Nothing here imports a test module or a
conftest, so there is no import loop through the fixtures.
"""
