/*
 * guc.hpp — the jobrunner.* settings.
 */
#pragma once

#include "pg/prelude.hpp"

namespace jobrunner {

extern char *guc_database_name;
extern char *guc_databases;
extern char *guc_jwt_secret;
extern char *guc_base_url;
extern int guc_max_in_flight;
extern int guc_poll_interval_ms;
extern int guc_retention_s;
extern char *guc_system_role;
extern char *guc_trusted_claim_roles;
extern int guc_max_response_kb;
extern int guc_max_request_kb;
extern int guc_failed_retention_s;

// Defines every jobrunner.* setting and reserves the prefix.
void define_gucs();

}  // namespace jobrunner
