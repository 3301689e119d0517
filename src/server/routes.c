/* SPDX-License-Identifier: MIT */
/* Every endpoint of the API, documented in docs/api.md. Order matters only
 * for metrics labels (the index is the route's identity). */
#include "macro.h"
#include "server.h"

#define SESSION AUTH_SESSION
#define USERS AUTH_ANY_USER

const Route server_routes[] = {
        { "GET", "/healthz", 0, BODY_NONE, NULL, NULL, api_healthz },
        { "GET", "/readyz", 0, BODY_NONE, NULL, NULL, api_readyz },
        { "GET", "/metrics", 0, BODY_NONE, NULL, NULL, api_metrics },

        { "POST", "/api/v1/tokens", AUTH_ADMIN, BODY_JSON, NULL, NULL, api_token_create },
        { "GET", "/api/v1/tokens", AUTH_ADMIN, BODY_NONE, NULL, NULL, api_token_list },
        { "DELETE", "/api/v1/tokens/*", AUTH_ADMIN, BODY_NONE, NULL, NULL, api_token_revoke },

        { "PUT", "/api/v1/secrets/*", AUTH_ADMIN, BODY_JSON, NULL, NULL, api_secret_put },
        { "GET", "/api/v1/secrets", AUTH_ADMIN, BODY_NONE, NULL, NULL, api_secret_list },
        { "DELETE", "/api/v1/secrets/*", AUTH_ADMIN, BODY_NONE, NULL, NULL, api_secret_delete },

        { "PUT", "/api/v1/blobs/*", USERS, BODY_STREAM, api_blob_upload_begin, api_blob_upload_data,
          api_blob_upload_end },
        { "HEAD", "/api/v1/blobs/*", USERS | SESSION, BODY_NONE, NULL, NULL, api_blob_head },
        { "GET", "/api/v1/blobs/*", USERS | SESSION, BODY_NONE, NULL, NULL, api_blob_get },
        { "POST", "/api/v1/blobs/missing", USERS, BODY_JSON, NULL, NULL, api_blob_missing },

        { "PUT", "/api/v1/images/*", AUTH_ADMIN, BODY_JSON, NULL, NULL, api_image_put },
        { "GET", "/api/v1/images/*", USERS | SESSION, BODY_NONE, NULL, NULL, api_image_get },
        { "GET", "/api/v1/images", USERS | SESSION, BODY_NONE, NULL, NULL, api_image_list },
        { "POST", "/api/v1/images/*/builds", AUTH_ADMIN | SESSION, BODY_JSON, NULL, NULL, api_image_build_report },

        { "POST", "/api/v1/jobs", USERS, BODY_JSON, NULL, NULL, api_job_submit },
        { "GET", "/api/v1/jobs", USERS, BODY_NONE, NULL, NULL, api_job_list },
        { "GET", "/api/v1/jobs/*", USERS, BODY_NONE, NULL, NULL, api_job_get },
        { "POST", "/api/v1/jobs/*/cancel", USERS, BODY_NONE, NULL, NULL, api_job_cancel },
        { "POST", "/api/v1/jobs/*/retry", USERS, BODY_NONE, NULL, NULL, api_job_retry },
        { "GET", "/api/v1/jobs/*/artifacts", USERS, BODY_NONE, NULL, NULL, api_artifact_list },
        { "GET", "/api/v1/tasks/*", USERS, BODY_NONE, NULL, NULL, api_task_get },
        { "GET", "/api/v1/tasks/*/log", USERS, BODY_NONE, NULL, NULL, api_log_get },
        { "GET", "/api/v1/artifacts/*", USERS, BODY_NONE, NULL, NULL, api_artifact_get },
        { "GET", "/api/v1/events", USERS, BODY_NONE, NULL, NULL, api_events },

        { "POST", "/api/v1/workers/register", AUTH_WORKER | AUTH_ADMIN, BODY_JSON, NULL, NULL,
          api_worker_register },
        { "GET", "/api/v1/workers", USERS, BODY_NONE, NULL, NULL, api_worker_list },
        { "POST", "/api/v1/workers/claim", SESSION, BODY_JSON, NULL, NULL, api_claim },
        { "POST", "/api/v1/workers/heartbeat", SESSION, BODY_JSON, NULL, NULL, api_worker_heartbeat },
        { "POST", "/api/v1/leases/*/heartbeat", SESSION, BODY_JSON, NULL, NULL, api_heartbeat },
        { "POST", "/api/v1/leases/*/log", SESSION, BODY_RAW, NULL, NULL, api_log_append },
        { "POST", "/api/v1/leases/*/finish", SESSION, BODY_JSON, NULL, NULL, api_finish },
        { "PUT", "/api/v1/leases/*/artifacts/*", SESSION, BODY_STREAM, api_artifact_upload_begin,
          api_artifact_upload_data, api_artifact_upload_end },
};

const size_t server_n_routes = ELEMENTSOF(server_routes);
