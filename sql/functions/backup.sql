-- backup.sql — what pg_dump keeps. A table created by an extension script is
-- left out of a dump (CREATE EXTENSION recreates it empty) unless marked
-- here: every table holding users' configuration, jobs or history, and the
-- sequence numbering the logs, so that a restore brings the queue back.
-- Dumping them needs a role that reads every row: a superuser, or a role
-- with BYPASSRLS that has been granted SELECT on these tables.

SELECT pg_catalog.pg_extension_config_dump('jobrunner.job_config', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.job', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.job_logs', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.job_logs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.schedule', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.rate_bucket', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.group_turn', '');
