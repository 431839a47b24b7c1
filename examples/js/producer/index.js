// Data Producer (user's guide): polls a paged API once a second and writes every record it
// gets, forever (until the instance is stopped or killed).
const { getPageFromAPI, wait } = require('./api');

module.exports = async function* (_stream) {
  while (true) {
    yield* await getPageFromAPI();
    await wait(1000);
  }
};
