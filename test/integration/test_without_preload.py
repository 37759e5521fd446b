"""test_without_preload.py — the SQL API without shared_preload_libraries.

A second throwaway cluster, started without preloading pg_jobrunner: the
extension installs, jobs queue (and stay pending: there is no worker), and
worker_status() says the worker is not running. Loading the library late
must not fail on its postmaster-level setting.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import unittest

import psycopg2

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLUSTER_SH = os.path.join(REPO, "test", "lib", "cluster.sh")


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WithoutPreloadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="jr-nopreload.", dir="/tmp")
        os.chmod(cls.dir, 0o755)
        conf = os.path.join(cls.dir, "extra.conf")
        with open(conf, "w") as f:
            f.write("shared_preload_libraries = ''\n")
        cls.port = free_port()
        subprocess.run([CLUSTER_SH, "start", os.path.join(cls.dir, "c"), str(cls.port), conf],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    @classmethod
    def tearDownClass(cls):
        subprocess.run([CLUSTER_SH, "stop", os.path.join(cls.dir, "c")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def connect(self):
        conn = psycopg2.connect(host=os.path.join(self.dir, "c"), port=self.port,
                                user="postgres", dbname="postgres", connect_timeout=5)
        conn.autocommit = True
        self.addCleanup(conn.close)
        return conn

    def test_api_works_and_jobs_stay_pending(self):
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS pg_jobrunner")
            cur.execute("INSERT INTO jobrunner.job_config (job_name, url) "
                        "VALUES ('nopreload', 'http://127.0.0.1:9/x') ON CONFLICT DO NOTHING")
            cur.execute("SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'nopreload')")
            job_id = cur.fetchone()[0]
            cur.execute("SELECT running, pid FROM jobrunner.worker_status()")
            self.assertEqual(cur.fetchone(), (False, None))
            cur.execute("SELECT state FROM jobrunner.job WHERE id = %s", (job_id,))
            self.assertEqual(cur.fetchone()[0], "pending")
            # The user-facing identity path loads the library late, too.
            cur.execute("BEGIN")
            cur.execute("SET LOCAL request.jwt.claims = "
                        "'{\"sub\": \"00000000-0000-4000-8000-0000000000aa\", \"role\": \"authenticated\"}'")
            cur.execute("SELECT jobrunner.queue_job('nopreload')")
            mine = cur.fetchone()[0]
            cur.execute("COMMIT")
            cur.execute("SELECT user_id::text, state FROM jobrunner.job WHERE id = %s", (mine,))
            self.assertEqual(cur.fetchone(), ("00000000-0000-4000-8000-0000000000aa", "pending"))

    def test_secret_is_still_hidden(self):
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS pg_jobrunner")
            cur.execute("SELECT jobrunner.worker_status()")  # loads the library
            cur.execute("SHOW jobrunner.jwt_secret")
            self.assertIn(cur.fetchone()[0], ("(hidden)", "(unset)"))


if __name__ == "__main__":
    unittest.main()
