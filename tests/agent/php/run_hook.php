<?php
// php run_hook.php HOOK_FILE STATE_JSON EVENT INVOICE_ID...: fire the event for each invoice
// against tblinvoices in STATE_JSON, print {"invoices": [...], "log": [...], "hooks": [...]}.
require __DIR__ . '/whmcs_stubs.php';
list(, $hookFile, $stateFile, $event) = $argv;
$GLOBALS['STUB_DB'] = $stateFile;
require $hookFile;
foreach (array_slice($argv, 4) as $invoiceId) {
    run_hook($event, array('invoiceid' => (int) $invoiceId));
}
echo json_encode(array(
    'invoices' => stub_db_rows(),
    'log' => $GLOBALS['STUB_LOG'],
    'hooks' => array_keys($GLOBALS['STUB_HOOKS']),
));
