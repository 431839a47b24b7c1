// A local stand-in for the database of the guide's examples: a fixed table of entries with
// the latency of a real query, so the examples run anywhere without a server.
const table = new Map(
  [
    { id: 1, name: 'Ada', role: 'engineer' },
    { id: 2, name: 'Grace', role: 'admiral' },
    { id: 3, name: 'Edsger', role: 'professor' },
  ].map((entry) => [entry.id, entry]),
);

const io = () => new Promise((resolve) => setTimeout(resolve, 1));

/** The entry stored under `id`, or null when there is none. */
async function getDBEntryForId(id) {
  await io();
  return table.get(Number(id)) || null;
}

module.exports = { getDBEntryForId };
