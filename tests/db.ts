/**
 * The real Postgres the durable-store tests run against: DATABASE_URL, or the
 * local server these machines have. When none answers, those tests are
 * skipped with one line saying how to enable them.
 *
 * @module
 */
import postgres from "postgres";

/** The database URL the tests use. */
export const DATABASE_URL = Deno.env.get("DATABASE_URL") ?? "postgres://root@127.0.0.1:5432/test";

async function probe(): Promise<boolean> {
  const sql = postgres(DATABASE_URL, { max: 1, connect_timeout: 3, onnotice: () => {} });
  try {
    await sql`select 1`;
    // The migrations are idempotent: the tests apply them in order, as `supabase db push` would.
    const dir = new URL("../supabase/migrations/", import.meta.url);
    const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".sql"))
      .sort();
    for (const name of files) await sql.unsafe(await Deno.readTextFile(new URL(name, dir)));
    return true;
  } catch {
    return false;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** Whether a database answered; tests use `ignore: !dbAvailable`. */
export const dbAvailable = await probe();

if (!dbAvailable) {
  console.log(
    `skipped: Postgres tests (no database at ${DATABASE_URL.replace(/:[^:@/]*@/, ":***@")}); ` +
      "set DATABASE_URL=postgres://user@host:5432/db to run them",
  );
}
