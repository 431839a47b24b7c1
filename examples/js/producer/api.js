// A local stand-in for the paged web API of the guide's examples: every call returns the next
// page of three records, with the latency of a real request.
const PAGE_SIZE = 3;
let nextPage = 1;

const io = () => new Promise((resolve) => setTimeout(resolve, 5));

/** The next page of records, as an array. */
async function getPageFromAPI() {
  await io();
  const page = nextPage++;
  return Array.from({ length: PAGE_SIZE }, (_, n) => ({ page, record: (page - 1) * PAGE_SIZE + n + 1 }));
}

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

module.exports = { getPageFromAPI, wait };
