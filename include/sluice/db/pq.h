/* pq.h: libpq, loaded the first time sluice calls it. A run on SQLite never
 * maps it, nor what it brings (OpenSSL, GnuTLS, Kerberos, LDAP: about 10 ms
 * of page faults at every start of the process).
 *
 * Include this instead of <libpq-fe.h>: each libpq function sluice calls is
 * a macro here for a pointer into the library, loaded first (sl_pq_load).
 * A function not listed in SL_PQ_FUNCS fails to link: add it there and
 * below. */
#ifndef SLUICE_DB_PQ_H
#define SLUICE_DB_PQ_H

#include <libpq-fe.h>
#include <stdatomic.h>

#define SL_PQ_FUNCS(X)      \
    X(PQbackendPID)         \
    X(PQbinaryTuples)       \
    X(PQcancel)             \
    X(PQclear)              \
    X(PQcmdTuples)          \
    X(PQconndefaults)       \
    X(PQconnectPoll)        \
    X(PQconnectStartParams) \
    X(PQconninfoFree)       \
    X(PQconninfoParse)      \
    X(PQconsumeInput)       \
    X(PQenterPipelineMode)  \
    X(PQerrorMessage)       \
    X(PQfinish)             \
    X(PQflush)              \
    X(PQfreeCancel)         \
    X(PQfreemem)            \
    X(PQgetCancel)          \
    X(PQgetResult)          \
    X(PQgetisnull)          \
    X(PQgetlength)          \
    X(PQgetvalue)           \
    X(PQisBusy)             \
    X(PQnfields)            \
    X(PQntuples)            \
    X(PQpingParams)         \
    X(PQpipelineSync)       \
    X(PQresultErrorField)   \
    X(PQresultErrorMessage) \
    X(PQresultStatus)       \
    X(PQsendPrepare)        \
    X(PQsendQueryParams)    \
    X(PQsendQueryPrepared)  \
    X(PQsetNoticeProcessor) \
    X(PQsetnonblocking)     \
    X(PQsocket)             \
    X(PQstatus)             \
    X(PQtransactionStatus)

#define SL_PQ_DECLARE(f) extern __typeof__(f) *sl_pq_##f;
SL_PQ_FUNCS(SL_PQ_DECLARE)
#undef SL_PQ_DECLARE

/* Whether libpq is loaded (set once, by sl_pq_load). */
extern atomic_int sl_pq_loaded;

/* Load libpq and find every function above (once, safe from any thread).
 * When it cannot, it says so on stderr, naming the library and what to
 * install, and exits 1: a database string for PostgreSQL is read through
 * libpq before anything is done to any database, so nothing has changed. */
void sl_pq_load(void);

#define SL_PQ(f) ((atomic_load_explicit(&sl_pq_loaded, memory_order_acquire) ? (void)0 : sl_pq_load()), sl_pq_##f)

#define PQbackendPID         SL_PQ(PQbackendPID)
#define PQbinaryTuples       SL_PQ(PQbinaryTuples)
#define PQcancel             SL_PQ(PQcancel)
#define PQclear              SL_PQ(PQclear)
#define PQcmdTuples          SL_PQ(PQcmdTuples)
#define PQconndefaults       SL_PQ(PQconndefaults)
#define PQconnectPoll        SL_PQ(PQconnectPoll)
#define PQconnectStartParams SL_PQ(PQconnectStartParams)
#define PQconninfoFree       SL_PQ(PQconninfoFree)
#define PQconninfoParse      SL_PQ(PQconninfoParse)
#define PQconsumeInput       SL_PQ(PQconsumeInput)
#define PQenterPipelineMode  SL_PQ(PQenterPipelineMode)
#define PQerrorMessage       SL_PQ(PQerrorMessage)
#define PQfinish             SL_PQ(PQfinish)
#define PQflush              SL_PQ(PQflush)
#define PQfreeCancel         SL_PQ(PQfreeCancel)
#define PQfreemem            SL_PQ(PQfreemem)
#define PQgetCancel          SL_PQ(PQgetCancel)
#define PQgetResult          SL_PQ(PQgetResult)
#define PQgetisnull          SL_PQ(PQgetisnull)
#define PQgetlength          SL_PQ(PQgetlength)
#define PQgetvalue           SL_PQ(PQgetvalue)
#define PQisBusy             SL_PQ(PQisBusy)
#define PQnfields            SL_PQ(PQnfields)
#define PQntuples            SL_PQ(PQntuples)
#define PQpingParams         SL_PQ(PQpingParams)
#define PQpipelineSync       SL_PQ(PQpipelineSync)
#define PQresultErrorField   SL_PQ(PQresultErrorField)
#define PQresultErrorMessage SL_PQ(PQresultErrorMessage)
#define PQresultStatus       SL_PQ(PQresultStatus)
#define PQsendPrepare        SL_PQ(PQsendPrepare)
#define PQsendQueryParams    SL_PQ(PQsendQueryParams)
#define PQsendQueryPrepared  SL_PQ(PQsendQueryPrepared)
#define PQsetNoticeProcessor SL_PQ(PQsetNoticeProcessor)
#define PQsetnonblocking     SL_PQ(PQsetnonblocking)
#define PQsocket             SL_PQ(PQsocket)
#define PQstatus             SL_PQ(PQstatus)
#define PQtransactionStatus  SL_PQ(PQtransactionStatus)

#endif
