// Data Transformer (user's guide): turns every id it reads into the database entry for it.
//   printf '2\n3\n' | si inst input - -t application/x-ndjson --end
const { getDBEntryForId } = require('./db');

module.exports = async function* (input) {
  for await (const id of input) {
    yield await getDBEntryForId(id);
  }
};
