#!/usr/bin/env bash
# test_flask.sh: the seed's users end to end: a Flask app with Flask-SQLAlchemy and Flask-Migrate, its own
# SQLALCHEMY_DATABASE_URI as sluice's --db, a backfill between two alembic revisions gated on the job's state
# in the database, and the way back down (PostgreSQL and SQLite). Debian's python3 and its packages.
. "$(dirname "$0")/../harness/lib.sh"

PY=/usr/bin/python3

# The application: users(id, first_name, last_name), and at APP_STAGE 1 a nullable full_name, at 2 NOT NULL.
write_app() {
    mkdir -p app
    cat >app/app.py <<'EOF'
import os
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from flask_migrate import Migrate

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["APP_DB"]
db = SQLAlchemy(app)
migrate = Migrate(app, db, render_as_batch=True)
STAGE = int(os.environ.get("APP_STAGE", "0"))


class User(db.Model):
    __tablename__ = "users"
    id = db.Column(db.Integer, primary_key=True)
    first_name = db.Column(db.String(50), nullable=False)
    last_name = db.Column(db.String(50), nullable=False)
    if STAGE >= 1:
        full_name = db.Column(db.String(101), nullable=STAGE == 1)
EOF
}

flask_db() { # flask_db STAGE ARGS...: `flask db ARGS` in the app, its model at STAGE
    local stage=$1
    shift
    run_cmd env -C app FLASK_APP=app APP_STAGE="$stage" "$PY" -m flask db "$@"
}

# The README's gate, pasted into the revision that must not run before the backfill.
gate_revision() {
    local file=$1
    "$PY" - "$file" <<'EOF'
import re, sys
path = sys.argv[1]
src = open(path).read()
gate = '''

def require_sluice_job(job):
    """Stop this revision until the sluice job is done in this database."""
    conn = op.get_bind()
    state = None
    if sa.inspect(conn).has_table("sluice_jobs"):
        state = conn.execute(sa.text("SELECT state FROM sluice_jobs WHERE job = :job"), {"job": job}).scalar()
    if state != "done":
        raise RuntimeError(f"sluice job {job} is {state or 'not run'} in this database: "
                           f"run `sluice up {job}` first, then upgrade again")
'''
src = src.replace("\ndef upgrade():\n", gate + "\n\ndef upgrade():\n    require_sluice_job(\"0001_backfill_full_name\")\n", 1)
open(path, "w").write(src)
EOF
}

# The table as a checksum, whatever the database.
users_sum() {
    "$PY" - "$APP_DB" <<'EOF'
import hashlib, sys
import sqlalchemy as sa
e = sa.create_engine(sys.argv[1])
with e.connect() as c:
    cols = [r["name"] for r in sa.inspect(c).get_columns("users")]
    rows = c.execute(sa.text("SELECT " + ", ".join(cols) + " FROM users ORDER BY id")).fetchall()
print(",".join(cols), hashlib.md5(repr(rows).encode()).hexdigest(), len(rows))
EOF
}

users_sql() {
    "$PY" - "$APP_DB" "$1" <<'EOF'
import sys
import sqlalchemy as sa
with sa.create_engine(sys.argv[1]).begin() as c:
    r = c.execute(sa.text(sys.argv[2]))
    if r.returns_rows:
        print("|".join("" if v is None else str(v) for v in r.fetchone()))
EOF
}

# The whole story on the database APP_DB names.
flask_story() {
    write_app
    flask_db 0 init
    assert_rc 0
    flask_db 0 migrate -m "users"
    assert_rc 0
    flask_db 0 upgrade
    assert_rc 0
    users_sql "INSERT INTO users (id, first_name, last_name)
               SELECT g, 'first' || g, 'last' || g FROM (WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL
               SELECT g + 1 FROM s WHERE g < 3000) SELECT g FROM s) n"
    local start
    start=$(users_sum)
    # revision 2: a nullable full_name; revision 3: NOT NULL, gated on the backfill
    flask_db 1 migrate -m "add full_name"
    assert_rc 0
    flask_db 1 upgrade
    assert_rc 0
    local rev2
    rev2=$(users_sql "SELECT version_num FROM alembic_version")
    flask_db 2 migrate -m "full_name not null"
    assert_rc 0
    local rev3
    rev3=$(grep -l "full_name not null" app/migrations/versions/*.py)
    gate_revision "$rev3"
    flask_db 2 upgrade
    assert_rc 1
    assert_contains "$ERR" "sluice job 0001_backfill_full_name is not run in this database"
    assert_eq "$(users_sql "SELECT version_num FROM alembic_version")" "$rev2" "alembic_version after the refusal"

    # the backfill, with the README's requires on alembic_version, through the app's own URL
    write_job 0001_backfill_full_name <<EOF
-- sluice:table users
-- sluice:batch 100
-- sluice:pause 100ms
-- sluice:requires SELECT version_num = '$rev2' FROM alembic_version
-- sluice:up
UPDATE users SET full_name = first_name || ' ' || last_name WHERE id BETWEEN :lo AND :hi AND full_name IS NULL;
-- sluice:down
UPDATE users SET full_name = NULL WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start --db "$APP_DB" up
    wait_until 30 test -s "$CKPT/0001_backfill_full_name.sluice"
    sleep 0.3
    sluice_kill INT
    assert_rc 3
    flask_db 2 upgrade
    assert_rc 1
    assert_contains "$ERR" "sluice job 0001_backfill_full_name is stopped"
    run_sluice --db "$APP_DB" up
    assert_rc 0
    assert_eq "$(users_sql "SELECT count(*) FROM users WHERE full_name = first_name || ' ' || last_name")" 3000
    flask_db 2 upgrade
    assert_rc 0
    assert_eq "$(users_sql "SELECT version_num FROM alembic_version")" "$(basename "$rev3" | cut -d_ -f1)" "head"
    # NOT NULL now holds
    if users_sql "INSERT INTO users (id, first_name, last_name) VALUES (9999, 'a', 'b')" 2>/dev/null; then
        fail "full_name accepted a NULL after the gated revision"
    fi

    # the way back: the gated revision, the backfill, the column
    flask_db 2 downgrade "$rev2"
    assert_rc 0
    run_sluice --db "$APP_DB" down 0001_backfill_full_name
    assert_rc 0
    assert_eq "$(users_sql "SELECT count(*) FROM users WHERE full_name IS NOT NULL")" 0
    flask_db 1 downgrade
    assert_rc 0
    assert_eq "$(users_sum)" "$start" "users after the way back down"
}

test_flask_postgresql() {
    export APP_DB="postgresql+psycopg2://${SLUICE_DB#postgresql://}"
    unset SLUICE_DB
    flask_story
}

test_flask_sqlite() {
    # Flask-SQLAlchemy 3 reads a relative sqlite:/// path from the app's instance folder: an absolute one
    # means the same file to the app and to sluice (README "With Flask-Migrate / alembic")
    export APP_DB="sqlite:////${T_DIR#/}/app.db"
    unset SLUICE_DB
    flask_story
}

run_test "Flask-Migrate on PostgreSQL: gated revision refused before the backfill, applied after; the way back" \
    test_flask_postgresql
run_test "Flask-Migrate on SQLite: gated revision refused before the backfill, applied after; the way back" \
    test_flask_sqlite
t_done
