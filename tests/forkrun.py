"""Run many `python -m synthaug ...` command lines fast: import the CLI once, fork a child per command line.

A driver script (FORK_DRIVER) reads {name: {cwd, env, args, stdout, stderr, inject?}} from a JSON file, runs
each in a forked child (its own folder, environment, and optionally a line of Python injecting a fault
first), and prints {name: exit code} as JSON. Importing torch and mlflow once instead of per case saves ~4 s
a case.
"""

import textwrap

FORK_DRIVER = textwrap.dedent("""
    import json, os, runpy, sys, traceback
    import synthaug.cli
    synthaug.cli.build_app()  # the expensive imports (every command's), once
    cases = json.load(open(sys.argv[1]))
    codes = {}
    for name, c in cases.items():
        sys.stdout.flush(); sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.chdir(c["cwd"])
                os.environ.clear(); os.environ.update(c["env"])
                for fd, path in ((1, c["stdout"]), (2, c["stderr"])):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
                exec(c.get("inject", ""), {"os": os})  # a fault to inject, if any
                sys.argv = ["synthaug", *c["args"]]
                try:
                    runpy.run_module("synthaug", run_name="__main__", alter_sys=True)
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                except BaseException:
                    traceback.print_exc()
            finally:
                sys.stdout.flush(); sys.stderr.flush()
                os._exit(code)
        codes[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    print(json.dumps(codes))
""")
