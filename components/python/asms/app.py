"""ASMS (Alorig School Management System), phase 1 slice, on the alorig SDK:
role-scoped access over the Head Office -> Branch -> School hierarchy.

* Every request carries `Authorization: Bearer <token>`; the user (role and
  scope) is looked up once and cached in Redis for 5 minutes.
* Every query goes through `VISIBLE` (the schools the user may see): a Head
  Office admin sees all its schools, a branch admin the branch's, a principal
  or teacher only their own. A record outside the scope answers 404, so its
  existence does not leak.
* The schema and the pilot's seed data are migrations the component applies
  itself (see migrations.py), once per instance.
* Timers (Asia/Karachi): `attendance_report` raises chronic-absence flags (3
  absences on the last 3 school days recorded), `grade_calculations` the GPA.
"""

import datetime
import json

from alorig import App, Http404, HttpError, IntegrityError, JsonResponse, PermissionDenied, db, redis

import migrations

app = App()

# The schools the user ($1 role, $2 scope id) may see.
VISIBLE = """SELECT s.id FROM schools s JOIN branches b ON b.id = s.branch_id
   WHERE ($1 = 'ho_admin' AND b.head_office_id = $2)
      OR ($1 = 'branch_admin' AND s.branch_id = $2)
      OR ($1 IN ('principal', 'teacher') AND s.id = $2)"""

_migrated = False  # per instance: with instance_reuse the check runs once per instance


@app.before_request
def authenticate(request):
    global _migrated
    if not _migrated:
        migrations.migrate()
        _migrated = True
    if request.path.rstrip("/") == "/healthz":
        return None
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Bearer "):
        raise HttpError(401, "missing bearer token")
    digest = migrations.token_hash(auth[len("Bearer "):].strip())
    cached = redis.get(f"session:{digest}")
    if cached is not None:
        request.user = json.loads(cached)
        return None
    user = db.query_one("SELECT id, name, role, scope_id FROM users WHERE token_sha256 = $1", digest)
    if user is None:
        raise HttpError(401, "unknown token")
    redis.set(f"session:{digest}", json.dumps(user), ttl=300)
    request.user = user
    return None


def scope(request):
    return request.user["role"], request.user["scope_id"]


@app.get("healthz")
def healthz(request):
    return {"ok": True, "migrations": db.query_value("SELECT max(version) FROM asms_migrations")}


@app.get("api/v1/me")
def me(request):
    return request.user


@app.get("api/v1/schools")
def schools(request):
    return db.query(
        f"""SELECT s.id, s.name, s.city, b.name AS branch FROM schools s JOIN branches b ON b.id = s.branch_id
            WHERE s.id IN ({VISIBLE}) ORDER BY s.id""", *scope(request))


@app.get("api/v1/students")
def students(request):
    school = request.GET.get("school")
    rows = db.query(
        f"""SELECT id, school_id, name, grade_level, gpa FROM students
            WHERE school_id IN ({VISIBLE}) AND ($3::int IS NULL OR school_id = $3)
            ORDER BY id LIMIT 500""", *scope(request), int(school) if school else None)
    return {"count": len(rows), "students": rows}


@app.get("api/v1/students/<int:pk>")
def student(request, pk):
    row = db.query_one(
        f"""SELECT id, school_id, name, grade_level, gpa FROM students
            WHERE id = $3 AND school_id IN ({VISIBLE})""", *scope(request), pk)
    if row is None:
        raise Http404("no such student")
    row["flagged"] = db.query_value("SELECT count(*) FROM absentee_flags WHERE student_id = $1", pk) > 0
    return row


@app.post("api/v1/attendance")
def attendance(request):
    """One class's register for one day, in one transaction: all or nothing."""
    role, scope_id = scope(request)
    if role not in ("principal", "teacher"):
        raise PermissionDenied("attendance is taken by a school's principal or teachers")
    body = request.json()
    try:
        day = datetime.date.fromisoformat(body["date"])
        records = [(int(r["student_id"]), r["status"]) for r in body["records"]]
    except (KeyError, TypeError, ValueError) as e:
        raise HttpError(400, f"expected {{date, records: [{{student_id, status}}]}}: {e}") from None
    try:
        _record(role, scope_id, day, records)
    except IntegrityError as e:  # the WIT constraint-violation, e.g. a status the CHECK refuses
        raise HttpError(400, f"refused by {e.constraint} ({e.sqlstate}); nothing was recorded") from None
    redis.delete(f"report:{day.isoformat()}:{role}:{scope_id}")
    return JsonResponse({"recorded": len(records)}, status=201)


def _record(role, scope_id, day, records):
    with db.transaction() as tx:
        for student_id, status in records:
            school = tx.query_one(f"SELECT school_id FROM students WHERE id = $3 AND school_id IN ({VISIBLE})", role, scope_id, student_id)
            if school is None:
                raise Http404(f"no such student {student_id}")
            tx.execute(
                """INSERT INTO attendance_records (school_id, student_id, day, status) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (student_id, day) DO UPDATE SET status = EXCLUDED.status""",
                school["school_id"], student_id, day, status)


@app.get("api/v1/reports/attendance")
def attendance_report(request):
    """Per school in scope: present/absent/late counts for `?date=`; cached in Redis for a minute."""
    role, scope_id = scope(request)
    day = request.GET.get("date") or datetime.date.today().isoformat()
    key = f"report:{day}:{role}:{scope_id}"
    cached = redis.get(key)
    if cached is not None:
        return JsonResponse(json.loads(cached), headers={"x-cache": "hit"})
    rows = db.query(
        f"""SELECT s.id AS school_id, s.name,
                   count(*) FILTER (WHERE a.status = 'present') AS present,
                   count(*) FILTER (WHERE a.status = 'absent') AS absent,
                   count(*) FILTER (WHERE a.status = 'late') AS late
            FROM schools s LEFT JOIN attendance_records a ON a.school_id = s.id AND a.day = $3
            WHERE s.id IN ({VISIBLE}) GROUP BY s.id, s.name ORDER BY s.id""",
        role, scope_id, datetime.date.fromisoformat(day))
    report = {"date": day, "schools": rows}
    redis.set(key, json.dumps(report, default=str), ttl=60)
    return JsonResponse(report, headers={"x-cache": "miss"})


@app.timer("attendance_report")
def flag_chronic_absentees(scheduled_at):
    """A student absent on each of the last 3 days with records is flagged (once)."""
    db.execute(
        """INSERT INTO absentee_flags (student_id, since)
           SELECT student_id, min(day) FROM (
             SELECT student_id, day, status, row_number() OVER (PARTITION BY student_id ORDER BY day DESC) AS n
             FROM attendance_records) recent
           WHERE n <= 3 GROUP BY student_id HAVING count(*) = 3 AND bool_and(status = 'absent')
           ON CONFLICT (student_id) DO NOTHING""")


@app.timer("grade_calculations")
def grade_calculations(scheduled_at):
    """GPA on a 4-point scale from the average score."""
    db.execute(
        """UPDATE students st SET gpa = round(least(4.0, g.avg / 25.0), 2)
           FROM (SELECT student_id, avg(score) AS avg FROM grades GROUP BY student_id) g
           WHERE g.student_id = st.id""")
