<?php
// php run_hook.php HOOK_FILE STATE_JSON EVENT INVOICE_ID...: load the table, fire the event
// for each invoice, print {"invoices": [...], "log": [...], "hooks": [...]} as JSON.
require __DIR__ . '/whmcs_stubs.php';
list(, $hookFile, $stateFile, $event) = $argv;
$GLOBALS['STUB_TABLES']['tblinvoices'] = json_decode(file_get_contents($stateFile), true);
require $hookFile;
foreach (array_slice($argv, 4) as $invoiceId) {
    run_hook($event, array('invoiceid' => (int) $invoiceId));
}
echo json_encode(array(
    'invoices' => $GLOBALS['STUB_TABLES']['tblinvoices'],
    'log' => $GLOBALS['STUB_LOG'],
    'hooks' => array_keys($GLOBALS['STUB_HOOKS']),
));
