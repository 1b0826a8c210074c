<?php
// php run.php STATE_JSON FILES ACTION [ARGS...]
//   FILES: the PHP files WHMCS would load, separated by ':' (the module's invoice_sync.php and
//          hooks.php, or the standalone hook).
//   ACTION: config | activate | deactivate | upgrade FROM_VERSION | output [QUERY [POST_BODY]]
//           | hook EVENT [INVOICE_ID...]
// STATE_JSON holds {"tables": {...}, "race": {invoice id: number another writer sets}}; it is
// the database while the action runs. Prints {"tables", "schemas", "log", "hooks", "result",
// "output"} as JSON.
require __DIR__ . '/whmcs_stubs.php';
list(, $stateFile, $files, $action) = $argv;
stub_db_open($stateFile);
foreach (explode(':', $files) as $file) {
    require $file;
}
$result = null;
ob_start();
if ($action === 'hook' && count($argv) === 5) {
    run_hook($argv[4], array()); // an event without an invoice (AfterCronJob)
} elseif ($action === 'hook') {
    foreach (array_slice($argv, 5) as $invoiceId) {
        run_hook($argv[4], array('invoiceid' => (int) $invoiceId));
    }
} elseif ($action === 'output') {
    if (isset($argv[4])) {
        parse_str($argv[4], $_GET); // the page's query string
    }
    if (isset($argv[5])) {
        parse_str($argv[5], $_POST); // a form posted to the page, e.g. finish=1&token=...
    }
    $_REQUEST = array_merge($_GET, $_POST);
    try {
        invoice_sync_output(array('modulelink' => 'addonmodules.php?module=invoice_sync', 'version' => '1.0'));
    } catch (StubRequestStopped $stopped) {
        echo $stopped->getMessage(); // what WHMCS shows instead of the page
    }
} elseif ($action === 'upgrade') {
    $result = invoice_sync_upgrade(array('version' => $argv[4]));
} else {
    $result = call_user_func('invoice_sync_' . $action);
}
$output = ob_get_clean();
echo json_encode(array(
    'tables' => stub_db_tables(),
    'schemas' => $GLOBALS['STUB_SCHEMAS'],
    'log' => $GLOBALS['STUB_LOG'],
    'hooks' => array_keys($GLOBALS['STUB_HOOKS']),
    'result' => $result,
    'output' => $output,
));
