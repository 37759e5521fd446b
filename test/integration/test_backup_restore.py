"""test_backup_restore.py — pg_dump keeps the queue; a restore does not call
endpoints by surprise.

Jobs in every state are dumped from the test database (pg_dump -Fc) and
restored (pg_restore) into a database of a second cluster whose worker serves
it. Everything comes back: job names, schedules, jobs with their history and
logs, the log numbering. The restored queue starts paused — it was dumped
from another cluster, and a staging copy must not call production's
endpoints — and says so in worker_status() and once in the log. After
resume_dispatch() its pending jobs are delivered once each, and the jobs that
were running when the dump was taken come back pending and are delivered.
"""

import os
import unittest

import harness
from harness import Cluster, new_user, query, queue_for, scalar, wait_for

ROLE = "authenticated"


class BackupRestoreTest(harness.JobrunnerTestCase):
    prefix = "it.backup"

    def queue_in_every_state(self):
        """Jobs of two users in every state; returns {state label: [ids]}."""
        done = self.job_name("bk_done", "/ok", max_retries=0)
        held = self.job_name("bk_held", "/block?ms=60000", timeout="1 hour")
        later = self.job_name("bk_later", "/ok", enabled=False)
        alice, bob = new_user(), new_user()
        jobs = {"completed": [queue_for(self.db, alice, ROLE, None, done, {"n": i}) for i in range(3)]}
        wait_for(lambda: scalar(self.db, "SELECT count(*) FROM jobrunner.job WHERE job_name = %s "
                                         "AND state = 'completed'", (done,)) == 3,
                 30, 0.05, "the completed jobs did not complete")
        jobs["running"] = [queue_for(self.db, bob, ROLE, None, held, {"n": 1}, dedup_key="bk")]
        self.ep.wait_for_current(1, job_name=held, timeout=15)
        # A newer body coalesced behind the running job (jobrunner.job_successor).
        jobs["behind"] = [queue_for(self.db, bob, ROLE, None, held, {"n": 2}, dedup_key="bk",
                                    on_duplicate="replace")]
        jobs["pending"] = [queue_for(self.db, alice, ROLE, None, later, {"n": i}) for i in range(4)]
        jobs["canceled"] = [queue_for(self.db, bob, ROLE, None, later, {"n": 9})]
        scalar(self.db, "SELECT jobrunner.dequeue_job(%s)", (jobs["canceled"][0],))
        return jobs, later

    def test_a_restored_queue_is_complete_and_paused_until_resumed(self):
        jobs, later = self.queue_in_every_state()
        with self.db.cursor() as cur:
            cur.execute("SELECT jobrunner.schedule_job('bk-nightly', '0 3 * * *', %s)", (later,))
        self.addCleanup(lambda: scalar(self.db, "SELECT jobrunner.unschedule_job('bk-nightly')"))
        before = self.snapshot(self.db)

        target = Cluster("restore", ["jobrunner.database_name = 'restored'",
                                     "cron.database_name = 'restored'"])
        self.addCleanup(target.destroy)
        target.start()
        dump = os.path.join(target.dir, "queue.dump")
        with open(dump, "wb") as f:
            f.write(harness.main_cluster_bin("pg_dump", "-Fc", "-d", os.environ.get("PGDATABASE", "jobrunner_it")))
        os.chmod(dump, 0o644)
        admin = target.connect()
        admin.cursor().execute("CREATE DATABASE restored")
        admin.close()
        target.bin("pg_restore", "-d", "restored", "--exit-on-error", dump)

        restored = target.connect("restored")
        self.addCleanup(restored.close)
        after = self.snapshot(restored)
        self.assertEqual(len(before["waiting"]), 1)
        for table in ("job_config", "schedule", "waiting"):
            self.assertEqual(after[table], before[table], "%s came back as it was" % table)
        # Logs: every one dumped (the restored worker may add its own since).
        self.assertEqual(after["logs"][:len(before["logs"])], before["logs"], "logs came back as they were")
        # Jobs: the same rows; the one running at the dump is put back to
        # pending by the restored queue's worker when it starts.
        self.assertEqual(set(after["jobs"]) - set(before["jobs"]), set(), "no job appeared")
        self.assertEqual(len(after["jobs"]), len(before["jobs"]), "no job was lost")
        # Log numbering goes on where it was: past every dumped row (the
        # restored worker may have written its own since, as may the source).
        self.assertGreaterEqual(scalar(restored, "SELECT last_value FROM jobrunner.job_log_entry_id_seq"),
                                max(r["id"] for r in before["logs"]),
                                "log numbering goes on where it was")

        # Paused: said in worker_status() and in the log; nothing is sent.
        status = wait_for(lambda: query(restored, "SELECT * FROM jobrunner.worker_status() "
                                                  "WHERE paused_reason LIKE '%copied from%'"),
                          30, 0.1, "the restored queue's worker did not say it is paused")[0]
        self.assertIn("resume_dispatch()", status["paused_reason"])
        wait_for(lambda: "dispatch paused: this queue was copied" in target.log_text(), 10, 0.1,
                 "no log line says dispatch is paused")
        with restored.cursor() as cur:
            cur.execute("UPDATE jobrunner.job_config SET enabled = true WHERE job_name = %s", (later,))
        harness.wait_worker_loops(restored, 3)
        self.assertEqual(sum(len(self.ep.requests(correlation_id=j)) for j in jobs["pending"]), 0,
                         "a paused queue sends nothing")
        self.assertEqual(target.log_text().count("dispatch paused: this queue was copied"), 1,
                         "the pause is logged once")

        # Resumed by an administrator: every pending job delivered once; the
        # job running at the dump time is attempted again.
        self.assertIs(scalar(restored, "SELECT jobrunner.resume_dispatch()"), True)
        wait_for(lambda: scalar(restored, "SELECT count(*) FROM jobrunner.job WHERE id = ANY(%s::uuid[]) "
                                          "AND state = 'completed'", (jobs["pending"],)) == 4,
                 30, 0.05, "the pending jobs were not delivered after resume_dispatch()")
        for job_id in jobs["pending"]:
            self.assertEqual(len(self.ep.requests(correlation_id=job_id)), 1, "delivered exactly once")
        self.ep.release()
        running = jobs["running"][0]
        wait_for(lambda: scalar(restored, "SELECT state FROM jobrunner.job WHERE id = %s", (running,))
                 == "completed", 30, 0.05, "the job running at the dump was not attempted again")
        # The body waiting behind it is queued when it ends, and delivered.
        behind = jobs["behind"][0]
        wait_for(lambda: scalar(restored, "SELECT state FROM jobrunner.job WHERE id = %s", (behind,))
                 == "completed", 30, 0.05, "the body waiting behind the running job was not delivered")
        # (The source cluster, whose held job was released too, sends it as well.)
        bodies = [r.json() for r in self.ep.requests(correlation_id=behind)]
        self.assertTrue(bodies and all(b == {"n": 2} for b in bodies), bodies)
        self.assertEqual(scalar(restored, "SELECT state FROM jobrunner.job WHERE id = %s",
                                (jobs["canceled"][0],)), "canceled")
        self.assertIsNone(scalar(restored, "SELECT paused_reason FROM jobrunner.worker_status()"))
        self.assertIs(scalar(restored, "SELECT jobrunner.resume_dispatch()"), False,
                      "resuming again changes nothing")

    @staticmethod
    def snapshot(conn):
        """What a restore must bring back, as comparable values."""
        return {
            "job_config": query(conn, "SELECT job_name, url, enabled, max_retries, timeout::text "
                                      "FROM jobrunner.job_config ORDER BY 1"),
            "schedule": query(conn, "SELECT schedule_name, cron, job_name FROM jobrunner.schedule ORDER BY 1"),
            "waiting": query(conn, "SELECT id::text, holder_id::text, request_body::text "
                                   "FROM jobrunner.job_successor ORDER BY 1"),
            "jobs": [(r["id"], r["job_name"], r["user_id"]) for r in
                     query(conn, "SELECT id::text, job_name, user_id::text FROM jobrunner.job ORDER BY 1")],
            "logs": query(conn, "SELECT id, job_id::text, attempt, log_message FROM jobrunner.job_logs "
                                "ORDER BY id"),
        }


if __name__ == "__main__":
    unittest.main()
