// A local stand-in for the database of the guide's examples: an in-memory table with the
// latency of a real call, so the examples run anywhere without a server.
const table = new Map();

const io = () => new Promise((resolve) => setTimeout(resolve, 1));

/** Store an entry for `id`; resolves to what a database would acknowledge. */
async function saveEntryToDB(id) {
  await io();
  table.set(id, { id, savedAt: table.size + 1 });
  return { saved: id, count: table.size };
}

module.exports = { saveEntryToDB };
