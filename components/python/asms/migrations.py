"""Schema migrations, applied by the component itself (no separate `migrate`
step to forget): each is a list of statements run in one transaction, recorded
in `asms_migrations`. A transaction-level advisory lock makes concurrent
instances wait for the one applying them. Migration 2 is the pilot's seed
data: one Head Office, two branches, the first 5 of the 74 schools, a user for
each role, and students."""

import hashlib

from alorig import db

LOCK = 740_074  # pg_advisory_xact_lock key for ASMS migrations

SCHEMA = [
    """CREATE TABLE head_offices (id serial PRIMARY KEY, name text NOT NULL)""",
    """CREATE TABLE branches (id serial PRIMARY KEY, head_office_id int NOT NULL REFERENCES head_offices, name text NOT NULL)""",
    """CREATE TABLE schools (id serial PRIMARY KEY, branch_id int NOT NULL REFERENCES branches, name text NOT NULL, city text NOT NULL)""",
    # role: ho_admin (scope: a head office), branch_admin (a branch), principal or teacher (a school)
    """CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL,
         role text NOT NULL CHECK (role IN ('ho_admin', 'branch_admin', 'principal', 'teacher')),
         scope_id int NOT NULL, token_sha256 text NOT NULL UNIQUE)""",
    """CREATE TABLE students (id serial PRIMARY KEY, school_id int NOT NULL REFERENCES schools,
         name text NOT NULL, grade_level int NOT NULL, gpa numeric(3,2))""",
    """CREATE INDEX students_school ON students (school_id)""",
    """CREATE TABLE attendance_records (school_id int NOT NULL REFERENCES schools, student_id int NOT NULL REFERENCES students,
         day date NOT NULL, status text NOT NULL CHECK (status IN ('present', 'absent', 'late')), PRIMARY KEY (student_id, day))""",
    """CREATE TABLE absentee_flags (student_id int PRIMARY KEY REFERENCES students, since date NOT NULL, raised_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE grades (student_id int NOT NULL REFERENCES students, subject text NOT NULL, score numeric(5,2) NOT NULL,
         PRIMARY KEY (student_id, subject))""",
]

SCHOOLS = [  # (branch, name, city): the pilot's first five campuses
    (1, "Model School Gulberg", "Lahore"),
    (1, "Model School Johar Town", "Lahore"),
    (1, "Model School Sialkot Cantt", "Sialkot"),
    (2, "Model School Clifton", "Karachi"),
    (2, "Model School Gulshan", "Karachi"),
]

# (name, role, scope id, token): the pilot's test accounts, one per role and scope.
USERS = [
    ("Ayesha (Head Office admin)", "ho_admin", 1, "ho-admin-token"),
    ("Bilal (Punjab branch admin)", "branch_admin", 1, "punjab-admin-token"),
    ("Sana (Sindh branch admin)", "branch_admin", 2, "sindh-admin-token"),
    ("Imran (principal, Gulberg)", "principal", 1, "gulberg-principal-token"),
    ("Hina (principal, Clifton)", "principal", 4, "clifton-principal-token"),
    ("Usman (teacher, Gulberg)", "teacher", 1, "gulberg-teacher-token"),
]


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def seed(tx):
    tx.execute("INSERT INTO head_offices (name) VALUES ($1)", "Alorig Schools Head Office")
    tx.execute("INSERT INTO branches (head_office_id, name) VALUES (1, $1), (1, $2)", "Punjab", "Sindh")
    for branch, name, city in SCHOOLS:
        tx.execute("INSERT INTO schools (branch_id, name, city) VALUES ($1, $2, $3)", branch, name, city)
    for name, role, scope, token in USERS:
        tx.execute("INSERT INTO users (name, role, scope_id, token_sha256) VALUES ($1, $2, $3, $4)", name, role, scope, token_hash(token))
    # 20 students per school, named after the school so a leak is easy to see. Ids go
    # school by school (1-20 Gulberg, 21-40 Johar Town, ...): without the ORDER BY the
    # planner is free to loop over the numbers first (it does, on a fresh table), which
    # gives ids 1-5 to five different schools.
    tx.execute(
        """INSERT INTO students (school_id, name, grade_level)
           SELECT s.id, s.name || ' student ' || n, 1 + n % 10 FROM schools s, generate_series(1, 20) n
           ORDER BY s.id, n""")
    tx.execute(
        """INSERT INTO grades (student_id, subject, score)
           SELECT st.id, subj, 50 + (st.id * 7 + length(subj) * 13) % 50
           FROM students st, unnest(ARRAY['maths', 'english', 'urdu', 'science']) subj""")


MIGRATIONS = [(1, SCHEMA), (2, seed)]


def migrate():
    """Applies what is missing; returns the versions applied now."""
    applied = []
    with db.transaction() as tx:
        tx.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
        tx.execute("CREATE TABLE IF NOT EXISTS asms_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["version"] for r in tx.query("SELECT version FROM asms_migrations")}
        for version, step in MIGRATIONS:
            if version in done:
                continue
            if callable(step):
                step(tx)
            else:
                for sql in step:
                    tx.execute(sql)
            tx.execute("INSERT INTO asms_migrations (version) VALUES ($1)", version)
            applied.append(version)
    return applied
